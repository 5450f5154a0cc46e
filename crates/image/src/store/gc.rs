//! Garbage collection: blobs no index entry reaches (and no live writer pinned), unpacked layers under
//! `<root>/layers` no named image's config lists (and no overlay mount uses), and crashed writers' temp files.
//! Runs with the exclusive lock held, so no reader sees a half-collected store.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use super::index::{self, Index};
use super::{blobs, io_err, lock, Digest, PruneReport, Store, StoreError};

#[derive(Default)]
struct Reachable {
    /// Blob hex digests.
    blobs: HashSet<String>,
    /// Diff id hex digests (names of unpacked layer dirs).
    layers: HashSet<String>,
}

impl Reachable {
    /// Everything index.json reaches. A root manifest that cannot be read stops the collection (its layers
    /// would otherwise go): the error names the image, to be removed first.
    fn of(store: &Store, idx: &Index) -> Result<Reachable, StoreError> {
        let mut r = Reachable::default();
        for e in &idx.entries {
            r.blobs.insert(e.digest.hex().to_string());
            r.walk(store, &e.digest, 0)
                .map_err(|source| StoreError::Damaged {
                    image: if e.name.is_empty() {
                        format!("(unnamed) {}", e.digest)
                    } else {
                        e.name.clone()
                    },
                    source: Box::new(source),
                })?;
        }
        Ok(r)
    }

    fn walk(&mut self, store: &Store, d: &Digest, depth: usize) -> Result<(), StoreError> {
        let bytes = store.read_blob(d)?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: format!("manifest {d}"),
            reason: e.to_string(),
        })?;
        if let Some(children) = v["manifests"].as_array() {
            for c in children {
                let Ok(child) = Digest::parse(c["digest"].as_str().unwrap_or("")) else {
                    continue;
                };
                self.blobs.insert(child.hex().to_string());
                // An index may list platforms that were never copied: only what is there is walked.
                if depth < 4 && store.has_blob(&child) {
                    let _ = self.walk(store, &child, depth + 1);
                }
            }
            return Ok(());
        }
        let config = Digest::parse(v["config"]["digest"].as_str().unwrap_or(""))?;
        self.blobs.insert(config.hex().to_string());
        for l in v["layers"].as_array().into_iter().flatten() {
            if let Ok(l) = Digest::parse(l["digest"].as_str().unwrap_or("")) {
                self.blobs.insert(l.hex().to_string());
            }
        }
        // The config names the unpacked layers to keep: an unreadable one is an error (a missing one, of an
        // image still being written by another tool, is not).
        if !store.has_blob(&config) {
            return Ok(());
        }
        let cfg: Value =
            serde_json::from_slice(&store.read_blob(&config)?).map_err(|e| StoreError::Corrupt {
                what: format!("config {config}"),
                reason: e.to_string(),
            })?;
        for id in cfg["rootfs"]["diff_ids"].as_array().into_iter().flatten() {
            if let Some(hex) = id.as_str().and_then(|s| s.strip_prefix("sha256:")) {
                self.layers.insert(hex.to_string());
            }
        }
        Ok(())
    }
}

/// Collect with the exclusive lock held and `idx` as it is on disk.
pub(super) fn collect(store: &Store, idx: &Index) -> Result<PruneReport, StoreError> {
    let reach = Reachable::of(store, idx)?;
    let pinned = blobs::pinned(&store.root().join("tmp"));
    let mut report = PruneReport::default();
    let dir = store.layout().join("blobs/sha256");
    for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if reach.blobs.contains(&name) || pinned.contains(&name) {
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        fs::remove_file(entry.path()).map_err(io_err("remove", &entry.path()))?;
        report.blobs_removed += 1;
        report.bytes_freed += size;
    }
    let in_use = mounted_lower_dirs();
    let layers = store.root().join("layers");
    for entry in fs::read_dir(&layers).map_err(io_err("read", &layers))?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        // A layer under a mounted overlay (a running container) stays, whatever the index says.
        if reach.layers.contains(&name) || in_use.iter().any(|u| u.starts_with(&path)) {
            continue;
        }
        fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
        report.layers_removed += 1;
    }
    blobs::clean_tmp(store);
    Ok(report)
}

pub(super) fn prune(store: &Store) -> Result<PruneReport, StoreError> {
    let _l = lock::exclusive(store.root())?;
    let idx = index::read(store.layout())?;
    collect(store, &idx)
}

/// After a failed import or load: unpin what it committed and remove those blobs if nothing else uses
/// them, so the store is as it was. Best effort: a damaged image elsewhere leaves them for `prune`.
pub(super) fn discard(store: &Store, digests: &[Digest]) {
    // Pin files are only rewritten under the store lock, so a collector never reads one half-written.
    let Ok(_l) = lock::exclusive(store.root()) else {
        store.pins.unpin(digests.iter().map(Digest::hex));
        return;
    };
    store.pins.unpin(digests.iter().map(Digest::hex));
    let Ok(idx) = index::read(store.layout()) else {
        return;
    };
    let Ok(reach) = Reachable::of(store, &idx) else {
        return;
    };
    let pinned = blobs::pinned(&store.root().join("tmp"));
    for d in digests {
        if !reach.blobs.contains(d.hex()) && !pinned.contains(d.hex()) {
            let _ = fs::remove_file(store.blob_path(d));
        }
    }
}

/// Directories used as overlay lower dirs by any mount in this mount namespace.
fn mounted_lower_dirs() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((_, fs_part)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = fs_part.split(' ');
        if fields.next() != Some("overlay") {
            continue;
        }
        for opt in fields.nth(1).unwrap_or("").split(',') {
            if let Some(l) = opt.strip_prefix("lowerdir=") {
                out.extend(l.split(':').map(|p| PathBuf::from(unescape_mount_path(p))));
            }
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v =
                u32::from(b[i + 1] - b'0') * 64 + u32::from(b[i + 2] - b'0') * 8 + u32::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mount_path(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/end\04"), r"/end\04");
    }
}
