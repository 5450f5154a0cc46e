//! Writing blobs: into `<root>/tmp`, hashed on the way, fsynced, and renamed into the layout only once the
//! digest is right, so a crash or a bad download never leaves a half blob visible.
//!
//! A blob that is in the layout but not yet named (a pull or import between its first commit and its
//! `set_name`) is *pinned*: its digest is listed in `<root>/tmp/pins-<pid>-<n>`, a file its Store holds a
//! lease (flock) on, and garbage collection keeps what live pin files list. Naming an image unpins its
//! blobs; a pin file whose owner died is ignored and removed.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::index::{sync_dir, TMP_PREFIX};
use super::{io_err, lock, Digest, Store, StoreError};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique name for a temp file of this process: `<kind>-<pid>-<n>`.
pub(super) fn tmp_name(kind: &str) -> String {
    format!(
        "{kind}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The digests this Store committed and has not named yet.
pub(super) struct Pins {
    tmp_dir: PathBuf,
    state: Mutex<PinState>,
}

#[derive(Default)]
struct PinState {
    file: Option<(PathBuf, File)>,
    counts: BTreeMap<String, usize>,
}

impl Pins {
    pub fn new(tmp_dir: PathBuf) -> Pins {
        Pins {
            tmp_dir,
            state: Mutex::new(PinState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pin `hex` (call with the store lock held, shared at least, before the blob appears).
    pub fn pin(&self, hex: &str) -> Result<(), StoreError> {
        let mut s = self.state();
        *s.counts.entry(hex.to_string()).or_default() += 1;
        if let Err(e) = s.sync(&self.tmp_dir) {
            s.release(hex);
            return Err(e);
        }
        Ok(())
    }

    pub fn unpin<'a>(&self, hexes: impl IntoIterator<Item = &'a str>) {
        let mut s = self.state();
        for h in hexes {
            s.release(h);
        }
        let _ = s.sync(&self.tmp_dir);
    }
}

impl PinState {
    fn release(&mut self, hex: &str) {
        if let Some(c) = self.counts.get_mut(hex) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(hex);
            }
        }
    }

    fn sync(&mut self, tmp_dir: &Path) -> Result<(), StoreError> {
        if self.file.is_none() {
            if self.counts.is_empty() {
                return Ok(());
            }
            let path = tmp_dir.join(tmp_name("pins"));
            let f = File::create(&path).map_err(io_err("create", &path))?;
            lock::lease(&f).map_err(io_err("lock", &path))?;
            self.file = Some((path, f));
        }
        if let Some((path, f)) = &self.file {
            let text: String = self.counts.keys().map(|k| format!("{k}\n")).collect();
            f.set_len(0).map_err(io_err("write", path))?;
            f.write_all_at(text.as_bytes(), 0)
                .map_err(io_err("write", path))?;
        }
        Ok(())
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Some((path, _)) = &self.state().file {
            let _ = fs::remove_file(path);
        }
    }
}

/// Digests pinned by live writers (any process); pin files of dead ones are removed.
pub(super) fn pinned(tmp_dir: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return out;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("pins-") {
            continue;
        }
        let path = e.path();
        if lock::abandoned(&path) {
            let _ = fs::remove_file(&path);
            continue;
        }
        out.extend(
            fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(String::from),
        );
    }
    out
}

/// Move a verified temp file into the layout as blob `digest`, pinned until it is named.
pub(super) fn commit_file(store: &Store, tmp: &Path, digest: &Digest) -> Result<(), StoreError> {
    let _l = lock::shared(store.root())?;
    store.pins.pin(digest.hex())?;
    let dest = store.blob_path(digest);
    if let Err(e) = fs::rename(tmp, &dest) {
        store.pins.unpin([digest.hex()]);
        return Err(io_err("store blob", &dest)(e));
    }
    sync_dir(dest.parent().unwrap_or(Path::new("/")))
}

/// Pin a blob that is already in the layout (so it survives until named); false if it is not there.
pub(super) fn pin_existing(store: &Store, digest: &Digest) -> Result<bool, StoreError> {
    let _l = lock::shared(store.root())?;
    if !store.has_blob(digest) {
        return Ok(false);
    }
    store.pins.pin(digest.hex())?;
    Ok(true)
}

/// A blob being written: `impl Write`, then [`BlobWriter::commit`] (or drop / [`BlobWriter::abort`]).
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    store: Store,
    hasher: Sha256,
    written: u64,
    /// A resumable partial download stays on drop.
    keep_on_drop: bool,
    finished: bool,
}

impl BlobWriter {
    pub(super) fn begin(store: &Store) -> Result<BlobWriter, StoreError> {
        let tmp = store.root().join("tmp").join(tmp_name("blob"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        lock::lease(&file).map_err(io_err("lock", &tmp))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            store: store.handle(),
            hasher: Sha256::new(),
            written: 0,
            keep_on_drop: false,
            finished: false,
        })
    }

    /// Continue a partial download of `expected`, kept as `tmp/partial-<hex>` between attempts. If another
    /// writer is on that partial right now, this one starts afresh instead.
    pub(super) fn resume(store: &Store, expected: &Digest) -> Result<BlobWriter, StoreError> {
        let tmp = store
            .root()
            .join("tmp")
            .join(format!("partial-{}", expected.hex()));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&tmp)
            .map_err(io_err("open", &tmp))?;
        if lock::lease(&file).is_err() {
            return BlobWriter::begin(store);
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err("read", &tmp))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            written += n as u64;
        }
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            store: store.handle(),
            hasher,
            written,
            keep_on_drop: true,
            finished: false,
        })
    }

    /// Bytes in the blob so far (where a resumed download continues).
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// Check the digest (if given) and make the blob visible; a mismatch deletes the temp file. The blob
    /// stays pinned (safe from garbage collection) until an image naming it is recorded with `set_name`.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<Digest, StoreError> {
        self.finished = true;
        let result = self.finish(expected);
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }

    fn finish(&mut self, expected: Option<&Digest>) -> Result<Digest, StoreError> {
        if let Some(mut f) = self.file.take() {
            f.flush().map_err(io_err("write", &self.tmp))?;
            f.sync_all().map_err(io_err("sync", &self.tmp))?;
        }
        let actual = self.digest();
        if let Some(e) = expected {
            if e != &actual {
                return Err(StoreError::DigestMismatch {
                    expected: e.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        commit_file(&self.store, &self.tmp, &actual)?;
        Ok(actual)
    }

    /// Give up: remove the temp file (a resumable partial too).
    pub fn abort(mut self) {
        self.finished = true;
        self.file = None;
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.finished && !self.keep_on_drop {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = f.write(buf).map_err(|source| {
            io::Error::new(
                source.kind(),
                WriteFailed {
                    path: self.tmp.clone(),
                    source,
                },
            )
        })?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

/// A failed write with the file it was for; the OS error stays reachable as its source (a full disk is
/// told apart by walking the chain).
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
struct WriteFailed {
    path: PathBuf,
    source: io::Error,
}

/// How old an unleased temp entry must be before it counts as a crashed writer's (covers the instant
/// between a writer creating a file and taking its lease).
const GRACE: Duration = Duration::from_secs(60);
/// Partial downloads are kept this long for a later resume.
const PARTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

fn older_than(path: &Path, age: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a > age)
}

/// Remove what crashed writers left: temp blobs and dirs nobody holds a lease on, old partial downloads,
/// and interrupted atomic writes in the layout. Call with the exclusive lock held.
pub(super) fn clean_tmp(store: &Store) {
    let dir = store.root().join("tmp");
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let path = e.path();
        let stale = if name.starts_with("pins-") {
            false // pinned() decides, and removes those of dead owners
        } else if name.starts_with("partial-") {
            older_than(&path, PARTIAL_TTL) && lock::abandoned(&path)
        } else {
            older_than(&path, GRACE) && lock::abandoned(&path)
        };
        if stale {
            let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
        }
    }
    for e in fs::read_dir(store.layout()).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) && older_than(&e.path(), GRACE) {
            let _ = fs::remove_file(e.path());
        }
    }
}

impl Store {
    /// A handle sharing this store's pins (for writers that outlive a borrow).
    pub(super) fn handle(&self) -> Store {
        Store {
            root: self.root.clone(),
            layout: self.layout.clone(),
            pins: Arc::clone(&self.pins),
        }
    }
}
