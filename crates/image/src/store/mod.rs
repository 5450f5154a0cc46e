//! The image store: an OCI image layout under `<root>/images` (readable and writable by skopeo, umoci and
//! podman), a name index in its index.json, unpacked layers under `<root>/layers`, and a lock that keeps
//! concurrent commands from corrupting it. See DESIGN.md for the on-disk layout.

mod archive;
mod blobs;
mod digest;
mod import;
mod index;
mod lock;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::Serialize;

pub use blobs::BlobWriter;
pub use digest::Digest;
pub use import::ImportConfig;

use crate::reference::{Reference, ReferenceError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Image {0} not found")]
    NotFound(String),
    #[error("Image id prefix {0} matches more than one image")]
    Ambiguous(String),
    #[error("Corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("Blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("Invalid digest {0:?}: expected sha256:<64 hex>")]
    BadDigest(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("Cannot unpack layer {layer} of {image}: {source}")]
    Unpack {
        image: String,
        layer: String,
        source: Box<crate::unpack::UnpackError>,
    },
    #[error("Archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
}

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One named image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRecord {
    pub name: String,
    pub manifest: Digest,
    pub config: Digest,
    pub created: Option<String>,
    /// Bytes of config and layers as stored (compressed).
    pub size: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub layers_removed: usize,
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub struct Store {
    root: PathBuf,
    layout: PathBuf,
}

/// The name an image is stored under: a full reference (`docker.io/library/busybox:latest`).
pub fn normalize_name(name: &str) -> Result<String, StoreError> {
    Ok(Reference::parse(name)?.to_string())
}

impl Store {
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let layout = root.join("images");
        for d in [layout.join("blobs/sha256"), root.join("tmp"), root.join("layers")] {
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            layout,
        };
        let marker = store.layout.join("oci-layout");
        if !marker.exists() {
            index::write_atomic(&store, &marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.layout.join("index.json").exists() {
            let _l = lock::exclusive(&store)?;
            if !store.layout.join("index.json").exists() {
                index::write(&store, &index::Index::default())?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI layout directory (`oci:<this>:<name>` for skopeo).
    pub fn layout(&self) -> &Path {
        &self.layout
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let _l = lock::shared(self)?;
        let idx = index::read(self)?;
        let mut out = Vec::new();
        for e in idx.named() {
            out.push(self.record(&e.name, &e.digest)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn record(&self, name: &str, manifest: &Digest) -> Result<ImageRecord, StoreError> {
        let m = self.read_manifest(manifest)?;
        let config = Digest::parse(m.config().digest().as_ref())?;
        let created = fs::read(self.blob_path(&config))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["created"].as_str().map(String::from));
        let size = m.config().size() + m.layers().iter().map(|l| l.size()).sum::<u64>();
        Ok(ImageRecord {
            name: name.to_string(),
            manifest: manifest.clone(),
            config,
            created,
            size,
        })
    }

    /// A name (normalised like docker does) or a unique prefix of an image id (config digest).
    pub fn find(&self, name_or_id: &str) -> Result<ImageRecord, StoreError> {
        let all = self.list()?;
        let wanted = normalize_name(name_or_id).ok();
        if let Some(r) = all
            .iter()
            .find(|r| Some(&r.name) == wanted.as_ref() || r.name == name_or_id)
        {
            return Ok(r.clone());
        }
        let prefix = name_or_id.trim_start_matches("sha256:");
        if prefix.len() >= 3 && prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            let hits: Vec<&ImageRecord> = all
                .iter()
                .filter(|r| r.config.hex().starts_with(prefix))
                .collect();
            let ids: HashSet<&str> = hits.iter().map(|r| r.config.hex()).collect();
            match ids.len() {
                0 => {}
                1 => return Ok(hits[0].clone()),
                _ => return Err(StoreError::Ambiguous(name_or_id.into())),
            }
        }
        Err(StoreError::NotFound(name_or_id.into()))
    }

    fn read_manifest(&self, d: &Digest) -> Result<ImageManifest, StoreError> {
        let bytes = self.read_blob(d)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: format!("manifest {d}"),
            reason: e.to_string(),
        })
    }

    /// A blob's bytes, checked against its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        let bytes = fs::read(&p).map_err(io_err("read", &p))?;
        let actual = Digest::of(&bytes);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    pub fn manifest(&self, image: &ImageRecord) -> Result<ImageManifest, StoreError> {
        self.read_manifest(&image.manifest)
    }

    pub fn config(&self, image: &ImageRecord) -> Result<ImageConfiguration, StoreError> {
        let bytes = self.read_blob(&image.config)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: format!("config of {}", image.name),
            reason: e.to_string(),
        })
    }

    pub fn tag(&self, name_or_id: &str, new_name: &str) -> Result<(), StoreError> {
        let image = self.find(name_or_id)?;
        let size = self.blob_size(&image.manifest)?;
        let media = self
            .read_manifest(&image.manifest)?
            .media_type()
            .as_ref()
            .map(|m| m.to_string());
        self.set_name(
            new_name,
            &image.manifest,
            media.as_deref().unwrap_or(OCI_MANIFEST),
            size,
        )
    }

    /// Drop a name (or every name of an id); what nothing uses any more is collected.
    pub fn remove(&self, name_or_id: &str) -> Result<(), StoreError> {
        let image = self.find(name_or_id)?;
        {
            let _l = lock::exclusive(self)?;
            let mut idx = index::read(self)?;
            let by_id =
                image.name != normalize_name(name_or_id).unwrap_or_default() && image.name != name_or_id;
            let names: Vec<String> = if by_id {
                let all = idx.named();
                all.iter()
                    .filter(|e| {
                        self.record(&e.name, &e.digest)
                            .is_ok_and(|r| r.config == image.config)
                    })
                    .map(|e| e.name.clone())
                    .collect()
            } else {
                vec![image.name.clone()]
            };
            idx.remove_names(&names);
            index::write(self, &idx)?;
        }
        self.prune().map(|_| ())
    }

    /// Remove blobs and unpacked layers no named image uses, and stale temp files.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let _l = lock::exclusive(self)?;
        let idx = index::read(self)?;
        let mut keep_blobs: HashSet<String> = HashSet::new();
        let mut keep_layers: HashSet<String> = HashSet::new();
        for e in &idx.manifests {
            keep_blobs.insert(e.digest.hex().to_string());
            let Ok(m) = self.read_manifest(&e.digest) else {
                continue;
            };
            keep_blobs.insert(m.config().digest().digest().to_string());
            for l in m.layers() {
                keep_blobs.insert(l.digest().digest().to_string());
            }
            if let Ok(cfg) = fs::read(self.blob_path(&Digest::parse(m.config().digest().as_ref())?)) {
                if let Ok(c) = serde_json::from_slice::<ImageConfiguration>(&cfg) {
                    keep_layers.extend(
                        c.rootfs()
                            .diff_ids()
                            .iter()
                            .map(|d| d.trim_start_matches("sha256:").to_string()),
                    );
                }
            }
        }
        let mut report = PruneReport::default();
        let blobs = self.layout.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(io_err("read", &blobs))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !keep_blobs.contains(&name) {
                report.bytes_freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(io_err("remove", &entry.path()))?;
                report.blobs_removed += 1;
            }
        }
        let in_use = mounted_lower_dirs();
        let layers = self.root.join("layers");
        for entry in fs::read_dir(&layers).map_err(io_err("read", &layers))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            // A layer under a running container's overlay stays, whatever the index says.
            if !keep_layers.contains(&name) && !in_use.iter().any(|u| u.starts_with(&path)) {
                fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
                report.layers_removed += 1;
            }
        }
        blobs::clean_tmp(self);
        Ok(report)
    }

    /// The image's layers unpacked (once, shared) under `<root>/layers/<diffid>`, lowest first.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, StoreError> {
        let _l = lock::shared(self)?;
        let manifest = self.manifest(image)?;
        let config = self.config(image)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(StoreError::Corrupt {
                what: format!("image {}", image.name),
                reason: format!(
                    "{} layers but {} diff_ids",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        let mut out = Vec::new();
        for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let hex = Digest::parse(diff_id)?.hex().to_string();
            let dir = self.root.join("layers").join(&hex);
            if !dir.exists() {
                let blob = self.blob_path(&Digest::parse(layer.digest().as_ref())?);
                let tmp = self
                    .root
                    .join("layers")
                    .join(format!(".tmp-{hex}-{}", std::process::id()));
                let _ = fs::remove_dir_all(&tmp);
                fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
                let media = layer.media_type().to_string();
                if let Err(source) = crate::unpack::unpack_layer(&blob, &media, &tmp) {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(StoreError::Unpack {
                        image: image.name.clone(),
                        layer: layer.digest().to_string(),
                        source: Box::new(source),
                    });
                }
                // Another process may have unpacked it meanwhile: theirs is as good as ours.
                if fs::rename(&tmp, &dir).is_err() {
                    let _ = fs::remove_dir_all(&tmp);
                }
            }
            out.push(dir);
        }
        Ok(out)
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.layout.join("blobs/sha256").join(d.hex())
    }

    pub fn blob_size(&self, d: &Digest) -> Result<u64, StoreError> {
        let p = self.blob_path(d);
        fs::metadata(&p).map(|m| m.len()).map_err(io_err("stat", &p))
    }

    pub fn begin_blob(&self) -> Result<BlobWriter, StoreError> {
        BlobWriter::begin(self)
    }

    pub fn resume_blob(&self, expected: &Digest) -> Result<BlobWriter, StoreError> {
        BlobWriter::resume(self, expected)
    }

    pub fn put_blob_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let mut w = self.begin_blob()?;
        std::io::Write::write_all(&mut w, data).map_err(io_err("write", &self.root.join("tmp")))?;
        w.commit(None)
    }

    /// Record `name` → manifest (already stored as a blob), replacing what `name` pointed to.
    pub fn set_name(
        &self,
        name: &str,
        manifest: &Digest,
        media_type: &str,
        size: u64,
    ) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        if !self.has_blob(manifest) {
            return Err(StoreError::NotFound(format!("{name}: manifest blob {manifest}")));
        }
        let _l = lock::exclusive(self)?;
        let mut idx = index::read(self)?;
        idx.set(&name, manifest, media_type, size);
        index::write(self, &idx)
    }

    pub fn import_rootfs(
        &self,
        source: &Path,
        name: &str,
        config: ImportConfig,
    ) -> Result<ImageRecord, StoreError> {
        import::import_rootfs(self, source, name, config)
    }

    pub fn save(&self, names: &[&str], out: &Path) -> Result<(), StoreError> {
        archive::save(self, names, out)
    }

    pub fn load(&self, archive_path: &Path) -> Result<Vec<ImageRecord>, StoreError> {
        archive::load(self, archive_path)
    }
}

/// Directories used as overlay lower dirs by any mount on this host.
fn mounted_lower_dirs() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.contains(" - overlay ")) {
        for opt in line.rsplit(' ').next().unwrap_or("").split(',') {
            if let Some(l) = opt.strip_prefix("lowerdir=") {
                out.extend(l.split(':').map(PathBuf::from));
            }
        }
    }
    out
}
