//! Unpacked layers: `<root>/layers/<diffid hex>/`, one directory per distinct layer, shared by every image
//! and instance that uses it (the read-only lower dirs of overlay mounts). A layer is unpacked once, into a
//! temp dir beside it, checked against its diff id and renamed into place, so a directory that exists is
//! complete.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::blobs::tmp_name;
use super::{io_err, lock, Digest, ImageRecord, Store, StoreError};
use crate::unpack::{unpack_layer_with, UnpackOptions};

impl Store {
    /// The image's layers unpacked (once, shared) under `<root>/layers/<diffid>`; ordered lowest first.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, StoreError> {
        let _l = lock::shared(self.root())?;
        let damaged = |source| StoreError::Damaged {
            image: image.name.clone(),
            source: Box::new(source),
        };
        let manifest = self.manifest(image).map_err(damaged)?;
        let config = self.config(image).map_err(damaged)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(damaged(StoreError::Corrupt {
                what: format!("config {}", image.config),
                reason: format!(
                    "the manifest has {} layers but the config {} diff ids",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            }));
        }
        let mut out = Vec::new();
        for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let diff_id = Digest::parse(diff_id).map_err(damaged)?;
            let dir = self.root().join("layers").join(diff_id.hex());
            if !dir.is_dir() {
                let blob = Digest::parse(layer.digest().as_ref()).map_err(damaged)?;
                self.unpack_one(image, &blob, layer.media_type().as_ref(), &diff_id, &dir)?;
            }
            out.push(dir);
        }
        Ok(out)
    }

    fn unpack_one(
        &self,
        image: &ImageRecord,
        blob: &Digest,
        media_type: &str,
        diff_id: &Digest,
        dir: &Path,
    ) -> Result<(), StoreError> {
        let damaged = |source| StoreError::Damaged {
            image: image.name.clone(),
            source: Box::new(source),
        };
        let path = self.blob_path(blob);
        if !path.is_file() {
            return Err(StoreError::Incomplete {
                image: image.name.clone(),
                blob: blob.to_string(),
            });
        }
        let mut f = File::open(&path).map_err(io_err("open", &path))?;
        let (actual, _) = Digest::of_reader(&mut f).map_err(io_err("read", &path))?;
        if &actual != blob {
            return Err(damaged(StoreError::DigestMismatch {
                expected: blob.to_string(),
                actual: actual.to_string(),
            }));
        }
        // Under <root>/layers, so the rename is on one filesystem; `prune` removes leftovers of a crash
        // (it runs with the exclusive lock, so never beside a live unpack).
        let tmp = self
            .root()
            .join("layers")
            .join(format!(".{}", tmp_name("unpack")));
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let result = unpack_layer_with(&path, media_type, &tmp, &UnpackOptions::overlay())
            .map_err(|e| StoreError::Unpack {
                image: image.name.clone(),
                layer: blob.to_string(),
                source: Box::new(e),
            })
            .and_then(|unpacked| {
                if unpacked.diff_id == diff_id.as_str() {
                    Ok(())
                } else {
                    Err(damaged(StoreError::Corrupt {
                        what: format!("layer {blob}"),
                        reason: format!("its content is {}, the config says {diff_id}", unpacked.diff_id),
                    }))
                }
            });
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Another process may have unpacked the same layer meanwhile: theirs is as good as ours.
        if fs::rename(&tmp, dir).is_err() {
            let _ = fs::remove_dir_all(&tmp);
            if !dir.is_dir() {
                return Err(io_err("create", dir)(std::io::Error::other(
                    "cannot rename the unpacked layer into place",
                )));
            }
        }
        Ok(())
    }
}
