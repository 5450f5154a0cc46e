//! Writing blobs: into `<root>/tmp`, hashed on the way, fsynced, and renamed into the layout only once the
//! digest is right, so a crash or a bad download never leaves a half blob visible.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::{io_err, Digest, Store, StoreError};

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct BlobWriter {
    file: File,
    tmp: PathBuf,
    blobs: PathBuf,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    pub(super) fn begin(store: &Store) -> Result<BlobWriter, StoreError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = store
            .root()
            .join("tmp")
            .join(format!("blob-{}-{n}", std::process::id()));
        let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        Ok(BlobWriter {
            file,
            tmp,
            blobs: store.layout().join("blobs/sha256"),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Continue a partial download of `expected` (kept under tmp/partial-<hex> between attempts).
    pub(super) fn resume(store: &Store, expected: &Digest) -> Result<BlobWriter, StoreError> {
        let tmp = store
            .root()
            .join("tmp")
            .join(format!("partial-{}", expected.hex()));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&tmp)
            .map_err(io_err("open", &tmp))?;
        let mut hasher = Sha256::new();
        let written = io::copy(&mut (&mut file).take(u64::MAX), &mut HashSink(&mut hasher))
            .map_err(io_err("read", &tmp))?;
        Ok(BlobWriter {
            file,
            tmp,
            blobs: store.layout().join("blobs/sha256"),
            hasher,
            written,
        })
    }

    /// Bytes in the blob so far (where a resumed download continues).
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// Check the digest (if given) and make the blob visible; a mismatch deletes the temp file.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<Digest, StoreError> {
        self.file.flush().map_err(io_err("write", &self.tmp))?;
        self.file.sync_all().map_err(io_err("sync", &self.tmp))?;
        let actual = Digest::from_hasher(self.hasher.clone());
        if let Some(e) = expected {
            if e != &actual {
                let _ = fs::remove_file(&self.tmp);
                return Err(StoreError::DigestMismatch {
                    expected: e.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let dest = self.blobs.join(actual.hex());
        fs::rename(&self.tmp, &dest).map_err(io_err("store", &dest))?;
        Ok(actual)
    }

    /// Give up: remove the temp file.
    pub fn abort(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Remove temp blobs of writers that are gone (not resumable partial downloads younger than a day).
pub(super) fn clean_tmp(store: &Store) {
    let dir = store.root().join("tmp");
    let Ok(entries) = fs::read_dir(&dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let stale = if let Some(rest) = name.strip_prefix("blob-") {
            // blob-<pid>-<n>: stale when that process is gone.
            rest.split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists())
        } else {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 86_400)
        };
        if stale {
            let _ = fs::remove_file(e.path()).or_else(|_| fs::remove_dir_all(e.path()));
        }
    }
}
