//! ext4 disk images for microVMs: the image's layers flattened into one directory (whiteouts applied), then
//! `mkfs.ext4 -d` copies that tree into a new filesystem image. No loop mounts, no root needed for mkfs.
//!
//! The image is sized to hold the tree plus `free_bytes`: data blocks of every inode counted once (hard links
//! share), directory and long-symlink blocks, the inode table (`-N`, so many small files or links fit), the
//! journal mkfs will create for that size, and a margin for group metadata; rounded up to a MiB. No blocks are
//! reserved for root (`-m 0`): the free space asked for is what the guest can use. If mkfs still runs out
//! of space, the image is retried 25% larger.
//!
//! [`build_ext4`] checks each layer's uncompressed digest against the config's diff ids, and holds an flock
//! on its temporary directory (the store's cleanup of `tmp/` leaves locked entries alone). mkfs.ext4 -d does
//! not copy the top directory's metadata: the image's `/` is always 0755 root:root.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::store::{Digest, ImageRecord, Store, StoreError};
use crate::unpack::{unpack_layer_with, UnpackError, UnpackOptions};

const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;
const MIB: u64 = 1 << 20;
const ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("Cannot read image {image} from the store: {source}")]
    Store { image: String, source: StoreError },
    #[error("Image {image} has a bad layer {digest}: {reason}")]
    LayerDigest {
        image: String,
        digest: String,
        reason: String,
    },
    #[error("Cannot flatten image {image}: {source}")]
    Unpack { image: String, source: UnpackError },
    #[error("Cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("Cannot run mkfs.ext4 (install e2fsprogs): {0}")]
    Tool(io::Error),
    #[error("Cannot build ext4 image {out}: mkfs.ext4 failed: {stderr}")]
    Mkfs { out: PathBuf, stderr: String },
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Build an ext4 image of `image` at `out` with about `free_bytes` free. The layers are flattened in a
/// temporary directory under `<store>/tmp`; `out` appears only when complete.
pub fn build_ext4(store: &Store, image: &ImageRecord, out: &Path, free_bytes: u64) -> Result<(), Ext4Error> {
    let store_err = |source| Ext4Error::Store {
        image: image.name.clone(),
        source,
    };
    let manifest = store.manifest(image).map_err(store_err)?;
    let tmp_root = store.root().join("tmp");
    fs::create_dir_all(&tmp_root).map_err(|source| Ext4Error::Io {
        op: "create",
        path: tmp_root.clone(),
        source,
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = TempDir(tmp_root.join(format!("ext4-{}-{nanos}", std::process::id())));
    fs::create_dir(&tmp.0).map_err(|source| Ext4Error::Io {
        op: "create",
        path: tmp.0.clone(),
        source,
    })?;
    // A lease: the store's cleanup of tmp/ skips entries someone holds an flock on.
    let lease_err = |source| Ext4Error::Io {
        op: "lock",
        path: tmp.0.clone(),
        source,
    };
    let dir = fs::File::open(&tmp.0).map_err(lease_err)?;
    let _lease = Flock::lock(dir, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| lease_err(e.into()))?;
    let config = store.config(image).map_err(store_err)?;
    let diff_ids = config.rootfs().diff_ids();
    for (i, layer) in manifest.layers().iter().enumerate() {
        let digest_str = layer.digest().to_string();
        let digest: Digest = digest_str
            .parse()
            .map_err(|e: StoreError| Ext4Error::LayerDigest {
                image: image.name.clone(),
                digest: digest_str.clone(),
                reason: e.to_string(),
            })?;
        let blob = store.blob_path(&digest);
        let got = unpack_layer_with(&blob, layer.media_type().as_ref(), &tmp.0, &UnpackOptions::flat())
            .map_err(|source| Ext4Error::Unpack {
                image: image.name.clone(),
                source,
            })?;
        // The config's diff ids describe what the layers hold: a mismatch is a broken or forged image.
        if let Some(want) = diff_ids.get(i) {
            if *want != got.diff_id {
                return Err(Ext4Error::LayerDigest {
                    image: image.name.clone(),
                    digest: digest_str,
                    reason: format!("uncompressed digest {} but the config says {want}", got.diff_id),
                });
            }
        }
    }
    build_ext4_from_dir(&tmp.0, out, free_bytes)
}

/// What a tree needs on ext4.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// Distinct inodes (hard links counted once).
    pub inodes: u64,
    /// Bytes of data blocks: files, directories, symlinks too long to live in the inode.
    pub data_bytes: u64,
}

/// Walk `dir` (never following symlinks) and add up what its content needs on ext4.
pub fn tree_usage(dir: &Path) -> io::Result<TreeUsage> {
    let mut seen = HashSet::new();
    let mut u = TreeUsage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut names_bytes = 0u64;
        let mut count = 0u64;
        for ent in fs::read_dir(&d)? {
            let ent = ent?;
            let m = ent.metadata()?; // lstat: read_dir entries are not followed
            names_bytes += ent.file_name().len() as u64;
            count += 1;
            if m.is_dir() {
                stack.push(ent.path());
            }
            if !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            u.inodes += 1;
            let ft = m.file_type();
            if ft.is_file() {
                // Sparse files take less, but mkfs -d may not keep the holes: count them full.
                u.data_bytes += m.len().div_ceil(BLOCK) * BLOCK;
                // An extent block per 340 extents of up to 128 MiB; generous for fragmentation.
                u.data_bytes += (m.len() / (32 * MIB)) * BLOCK;
            } else if ft.is_symlink() && m.len() >= 60 {
                u.data_bytes += BLOCK;
            }
        }
        // ext4 directory entries: 8 bytes + name, 4-byte aligned; blocks are never fully packed.
        let entries = (count + 2) * 12 + names_bytes;
        u.data_bytes += (entries * 3 / 2).div_ceil(BLOCK).max(1) * BLOCK;
    }
    u.inodes += 1; // the top directory
    Ok(u)
}

/// The journal `mke2fs` creates by default for a filesystem of `blocks` 4 KiB blocks (ext2fs_default_journal_size).
fn journal_bytes(blocks: u64) -> u64 {
    let jblocks = match blocks {
        b if b < 2048 => 0,
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    };
    jblocks * BLOCK
}

/// Image size and inode count for a tree of `usage` with `free_bytes` to spare.
pub fn ext4_size(usage: TreeUsage, free_bytes: u64) -> (u64, u64) {
    // Room for files the guest creates too: one inode per 16 KiB of free space, like mke2fs's default ratio.
    let inodes = (usage.inodes + usage.inodes / 10 + 64 + free_bytes / 16384).max(128);
    let inode_table = inodes.div_ceil(BLOCK / INODE_SIZE) * BLOCK;
    let base = usage.data_bytes + inode_table + free_bytes;
    // Group descriptors, bitmaps, superblock backups, reserved GDT blocks: ~3%, plus a fixed few MiB.
    let with_meta = base + base / 32 + 4 * MIB;
    let size = with_meta + journal_bytes(with_meta / BLOCK);
    // Adding the journal can cross into a larger journal size: recompute once with the final size.
    let size = with_meta + journal_bytes(size / BLOCK);
    (size.div_ceil(MIB) * MIB, inodes)
}

/// `mkfs.ext4 -d dir`: an ext4 image of `dir` at `out` with about `free_bytes` free.
pub fn build_ext4_from_dir(dir: &Path, out: &Path, free_bytes: u64) -> Result<(), Ext4Error> {
    let usage = tree_usage(dir).map_err(|source| Ext4Error::Io {
        op: "measure",
        path: dir.to_path_buf(),
        source,
    })?;
    let (mut size, inodes) = ext4_size(usage, free_bytes);
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut last_err = String::new();
    for _ in 0..ATTEMPTS {
        let _ = fs::remove_file(&tmp);
        let output = Command::new("mkfs.ext4")
            .args([
                "-F", "-q", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0", "-L", "vessel",
            ])
            .arg("-N")
            .arg(inodes.to_string())
            .arg("-d")
            .arg(dir)
            .arg(&tmp)
            .arg(format!("{}k", size / 1024))
            .env("LC_ALL", "C")
            .output()
            .map_err(Ext4Error::Tool)?;
        if output.status.success() {
            return fs::rename(&tmp, out).map_err(|source| {
                let _ = fs::remove_file(&tmp);
                Ext4Error::Io {
                    op: "rename the new image to",
                    path: out.to_path_buf(),
                    source,
                }
            });
        }
        last_err = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let _ = fs::remove_file(&tmp);
        let lower = last_err.to_lowercase();
        if !(lower.contains("space") || lower.contains("allocate") || lower.contains("inode")) {
            break;
        }
        size = (size + size / 4).div_ceil(MIB) * MIB;
    }
    Err(Ext4Error::Mkfs {
        out: out.to_path_buf(),
        stderr: last_err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_cover_content_metadata_and_free_space() {
        let u = TreeUsage {
            inodes: 400,
            data_bytes: 2 * MIB,
        };
        let (size, inodes) = ext4_size(u, 64 * MIB);
        assert!(inodes >= 440 + 64 * MIB / 16384);
        assert!(size >= 2 * MIB + 64 * MIB + journal_bytes(size / BLOCK));
        assert_eq!(size % MIB, 0);
        assert!(size < 120 * MIB, "{size}");
        let (big, _) = ext4_size(
            TreeUsage {
                inodes: 100_000,
                data_bytes: 10 << 30,
            },
            1 << 30,
        );
        assert!(big > (11 << 30) + journal_bytes(big / BLOCK));
        assert_eq!(journal_bytes(1000), 0);
        assert_eq!(journal_bytes(100_000), 16 * MIB);
    }
}
