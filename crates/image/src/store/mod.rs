//! The image store: an OCI image layout under `<root>/images` (readable and writable by skopeo, umoci and
//! podman), a name index in its index.json, unpacked layers under `<root>/layers`, and a lock that keeps
//! concurrent commands from corrupting it. See DESIGN.md for the on-disk layout.
//!
//! - Blobs are written to `<root>/tmp`, hashed, fsynced and renamed into `images/blobs/sha256` ([`BlobWriter`]);
//!   a crash leaves only temp files, which the next writer removes.
//! - `<root>/lock` is flocked shared by readers and blob commits, exclusively by index writers and garbage
//!   collection; index.json is replaced atomically.
//! - Names are full references (`docker.io/library/busybox:latest`); [`Store::find`] also takes short names
//!   (`busybox`) and image id prefixes (the config digest, as docker shows it).
//! - [`Store::remove`] and [`Store::prune`] collect blobs and unpacked layers nothing references.
//!
//! ```no_run
//! use vessel_image::store::{ImportConfig, Store};
//! let store = Store::open(std::path::Path::new("/var/lib/vessel"))?;
//! let image = store.import_rootfs("/tmp/rootfs".as_ref(), "vessel/busybox", ImportConfig::default())?;
//! assert_eq!(store.find("vessel/busybox")?.config, image.config);
//! # Ok::<(), vessel_image::store::StoreError>(())
//! ```

mod blobs;
mod compression;
mod digest;
mod gc;
mod import;
mod index;
mod layers;
mod load;
mod lock;
mod rootfs_tar;
mod save;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::Serialize;
use serde_json::Value;

pub use blobs::BlobWriter;
pub use digest::Digest;
pub use import::ImportConfig;

use crate::reference::{Reference, ReferenceError};

pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

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
    #[error("Image {image} is damaged: {source}")]
    Damaged { image: String, source: Box<StoreError> },
    #[error("Image {image} is incomplete: blob {blob} is not in the store")]
    Incomplete { image: String, blob: String },
    #[error("Cannot import {image}: {source}")]
    Import { image: String, source: Box<StoreError> },
    /// `what` is the archive, or the image and the archive.
    #[error("Cannot load {what}: {source}")]
    Load { what: String, source: Box<StoreError> },
    #[error("Cannot save {images} to {path}: {source}")]
    Save {
        images: String,
        path: PathBuf,
        source: Box<StoreError>,
    },
    /// Something wrong inside an archive being loaded (the message says what).
    #[error("{0}")]
    BadArchive(String),
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    /// The full reference it is stored under (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The image manifest (for a name pointing at an index: the host platform's manifest in it).
    pub manifest: Digest,
    /// The config blob: the image id.
    pub config: Digest,
    /// The config's `created` time (RFC 3339).
    pub created: Option<String>,
    /// Bytes of config and layers as stored (compressed).
    pub size: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub layers_removed: usize,
}

/// An image store rooted at a directory. Cheap to open; any number of `Store`s (in threads or
/// processes) may share one root.
pub struct Store {
    root: PathBuf,
    layout: PathBuf,
    pins: Arc<blobs::Pins>,
}

/// The name an image is stored under: a full reference (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalize_name(name: &str) -> Result<String, StoreError> {
    Ok(Reference::parse(name)?.to_string())
}

/// The OCI architecture name of this host.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// What a name or id given by a user matched.
enum Match {
    /// The index entry with this name.
    Name(String),
    /// Every image with this config (an id prefix); the first of them.
    Id(ImageRecord),
}

impl Store {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let layout = root.join("images");
        for d in [layout.join("blobs/sha256"), root.join("tmp"), root.join("layers")] {
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            layout,
            pins: Arc::new(blobs::Pins::new(root.join("tmp"))),
        };
        let marker = store.layout.join("oci-layout");
        if !marker.exists() {
            index::write_atomic(&marker, OCI_LAYOUT.as_bytes())?;
        }
        if !store.layout.join("index.json").exists() {
            let _l = lock::exclusive(&store.root)?;
            if !store.layout.join("index.json").exists() {
                index::write(&store.layout, &index::Index::default())?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI layout directory (`oci:<this>:<name>` for skopeo, `--image <this>:<name>` for umoci).
    pub fn layout(&self) -> &Path {
        &self.layout
    }

    /// Every named image, sorted by name (an image with several names appears once per name).
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let _l = lock::shared(&self.root)?;
        let idx = index::read(&self.layout)?;
        let mut out = idx
            .named()
            .map(|e| self.record(&e.name, &e.digest))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A name (normalised like docker: `busybox` is `docker.io/library/busybox:latest`; `name@sha256:…`
    /// matches by manifest digest) or a unique prefix of an image id (config digest, `sha256:` optional).
    pub fn find(&self, name_or_id: &str) -> Result<ImageRecord, StoreError> {
        let _l = lock::shared(&self.root)?;
        let idx = index::read(&self.layout)?;
        match self.lookup(&idx, name_or_id)? {
            Match::Name(name) => {
                let e = idx
                    .named()
                    .find(|e| e.name == name)
                    .ok_or_else(|| StoreError::NotFound(name.clone()))?;
                self.record(&e.name, &e.digest)
            }
            Match::Id(record) => Ok(record),
        }
    }

    fn lookup(&self, idx: &index::Index, name_or_id: &str) -> Result<Match, StoreError> {
        let wanted = Reference::parse(name_or_id).ok();
        if let Some(w) = &wanted {
            if let Some(d) = &w.digest {
                let d = Digest::parse(d)?;
                for e in idx.named() {
                    let same_repo = Reference::parse(&e.name).is_ok_and(|r| r.name() == w.name());
                    if same_repo
                        && (e.digest == d || self.record(&e.name, &e.digest).is_ok_and(|r| r.manifest == d))
                    {
                        return Ok(Match::Name(e.name.clone()));
                    }
                }
            }
            let full = w.to_string();
            if let Some(e) = idx.named().find(|e| e.name == full) {
                return Ok(Match::Name(e.name.clone()));
            }
        }
        // Names other tools wrote as they are (`latest`, `foo`), matched as given or normalised alike.
        let normal = wanted.map(|w| w.to_string());
        if let Some(e) = idx.named().find(|e| {
            e.name == name_or_id
                || (normal.is_some() && Reference::parse(&e.name).ok().map(|r| r.to_string()) == normal)
        }) {
            return Ok(Match::Name(e.name.clone()));
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            // Damaged images cannot be found by id, only by name.
            let mut hits: Vec<ImageRecord> = idx
                .named()
                .filter_map(|e| self.record(&e.name, &e.digest).ok())
                .filter(|r| r.config.hex().starts_with(prefix))
                .collect();
            hits.sort_by(|a, b| a.name.cmp(&b.name));
            match hits.first() {
                Some(first) if hits.iter().all(|r| r.config == first.config) => {
                    return Ok(Match::Id(first.clone()))
                }
                Some(_) => return Err(StoreError::Ambiguous(name_or_id.to_string())),
                None => {}
            }
        }
        Err(StoreError::NotFound(name_or_id.to_string()))
    }

    fn record(&self, name: &str, digest: &Digest) -> Result<ImageRecord, StoreError> {
        let damaged = |source| StoreError::Damaged {
            image: name.to_string(),
            source: Box::new(source),
        };
        let (manifest, m) = self.image_manifest(digest).map_err(damaged)?;
        let config = Digest::parse(m["config"]["digest"].as_str().unwrap_or("")).map_err(damaged)?;
        let cfg: Value = serde_json::from_slice(&self.read_blob(&config).map_err(damaged)?).map_err(|e| {
            damaged(StoreError::Corrupt {
                what: format!("config {config}"),
                reason: e.to_string(),
            })
        })?;
        let size = m["config"]["size"].as_u64().unwrap_or(0)
            + m["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["size"].as_u64())
                .sum::<u64>();
        Ok(ImageRecord {
            name: name.to_string(),
            manifest,
            config,
            created: cfg["created"].as_str().map(String::from),
            size,
        })
    }

    /// The image manifest `d` is, or for an index, the one for this host's platform (linux/amd64 here).
    fn image_manifest(&self, d: &Digest) -> Result<(Digest, Value), StoreError> {
        let parse = |d: &Digest, bytes: &[u8]| -> Result<Value, StoreError> {
            let v: Value = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
                what: format!("manifest {d}"),
                reason: e.to_string(),
            })?;
            if v.is_object() {
                Ok(v)
            } else {
                Err(StoreError::Corrupt {
                    what: format!("manifest {d}"),
                    reason: "not a JSON object".into(),
                })
            }
        };
        let v = parse(d, &self.read_blob(d)?)?;
        let Some(list) = v["manifests"].as_array() else {
            return Ok((d.clone(), v));
        };
        let pick = list
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_arch())
            .or(if list.len() == 1 { list.first() } else { None })
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("index {d}"),
                reason: format!("it has no linux/{} image", host_arch()),
            })?;
        let child = Digest::parse(pick["digest"].as_str().unwrap_or(""))?;
        let v = parse(&child, &self.read_blob(&child)?)?;
        if v["manifests"].is_array() {
            return Err(StoreError::Corrupt {
                what: format!("index {d}"),
                reason: "it nests another index".into(),
            });
        }
        Ok((child, v))
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
        let bytes = self.read_blob(&image.manifest)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: format!("manifest {} of {}", image.manifest, image.name),
            reason: e.to_string(),
        })
    }

    pub fn config(&self, image: &ImageRecord) -> Result<ImageConfiguration, StoreError> {
        let bytes = self.read_blob(&image.config)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: format!("config {} of {}", image.config, image.name),
            reason: e.to_string(),
        })
    }

    /// Give the image `name_or_id` finds a further name (replacing what `new_name` pointed at).
    pub fn tag(&self, name_or_id: &str, new_name: &str) -> Result<(), StoreError> {
        let new_name = normalize_name(new_name)?;
        let _l = lock::exclusive(&self.root)?;
        let mut idx = index::read(&self.layout)?;
        let source = match self.lookup(&idx, name_or_id)? {
            Match::Name(n) => n,
            Match::Id(r) => r.name,
        };
        let e = idx
            .named()
            .find(|e| e.name == source)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(source.clone()))?;
        idx.set(&new_name, &e.digest, &e.media_type, e.size);
        index::write(&self.layout, &idx)?;
        blobs::clean_tmp(self);
        Ok(())
    }

    /// Drop a name, or every name of an image id; then collect what nothing uses any more (blobs and
    /// unpacked layers). A damaged image can be removed by name.
    pub fn remove(&self, name_or_id: &str) -> Result<(), StoreError> {
        let _l = lock::exclusive(&self.root)?;
        let mut idx = index::read(&self.layout)?;
        let names: Vec<String> = match self.lookup(&idx, name_or_id)? {
            Match::Name(n) => vec![n],
            Match::Id(image) => idx
                .named()
                .filter(|e| {
                    self.record(&e.name, &e.digest)
                        .is_ok_and(|r| r.config == image.config)
                })
                .map(|e| e.name.clone())
                .collect(),
        };
        idx.remove_names(&names);
        index::write(&self.layout, &idx)?;
        // The name is gone either way; a damaged image elsewhere stops the collection, `prune` reports it.
        let _ = gc::collect(self, &idx);
        Ok(())
    }

    /// Keep `image` (its manifest, config, blobs and unpacked layers) for `holder`, e.g. an instance made from
    /// it, even after its names are removed or moved to another image. Replaces what `holder` held.
    pub fn hold(&self, holder: &str, image: &ImageRecord) -> Result<(), StoreError> {
        let _l = lock::exclusive(&self.root)?;
        let mut idx = index::read(&self.layout)?;
        let bytes = self.read_blob(&image.manifest)?;
        let media_type = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| oci_spec::image::MediaType::ImageManifest.to_string());
        idx.hold(holder, &image.manifest, &media_type, bytes.len() as u64);
        index::write(&self.layout, &idx)
    }

    /// The image `holder` holds (its `name` is the holder's).
    pub fn held(&self, holder: &str) -> Result<ImageRecord, StoreError> {
        let _l = lock::shared(&self.root)?;
        let idx = index::read(&self.layout)?;
        let e = idx
            .held(holder)
            .ok_or_else(|| StoreError::NotFound(format!("the image held for {holder}")))?;
        self.record(holder, &e.digest)
    }

    /// Everyone who holds an image.
    pub fn holders(&self) -> Result<Vec<String>, StoreError> {
        let _l = lock::shared(&self.root)?;
        Ok(index::read(&self.layout)?.holders().map(str::to_string).collect())
    }

    /// Let go of what `holder` held; what nothing else uses is collected.
    pub fn release(&self, holder: &str) -> Result<(), StoreError> {
        let _l = lock::exclusive(&self.root)?;
        let mut idx = index::read(&self.layout)?;
        if idx.held(holder).is_none() {
            return Ok(());
        }
        idx.release(holder);
        index::write(&self.layout, &idx)?;
        let _ = gc::collect(self, &idx);
        Ok(())
    }

    /// Remove blobs and unpacked layers no image uses, and what crashed writers left in `<root>/tmp`.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        gc::prune(self)
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.layout.join("blobs/sha256").join(d.hex())
    }

    pub fn blob_size(&self, d: &Digest) -> Result<u64, StoreError> {
        let p = self.blob_path(d);
        fs::metadata(&p).map(|m| m.len()).map_err(io_err("stat", &p))
    }

    /// A new blob: a temp file and a running sha256. Dropped without `commit`, it leaves nothing.
    pub fn begin_blob(&self) -> Result<BlobWriter, StoreError> {
        BlobWriter::begin(self)
    }

    /// Continue a partial download of `expected` (a fresh writer if there is none). Dropped without
    /// `commit`, the partial stays for the next attempt; `abort` removes it.
    pub fn resume_blob(&self, expected: &Digest) -> Result<BlobWriter, StoreError> {
        BlobWriter::resume(self, expected)
    }

    /// Store `data` as a blob (nothing is written if it is there already).
    pub fn put_blob_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(data);
        if blobs::pin_existing(self, &d)? {
            return Ok(d);
        }
        let mut w = self.begin_blob()?;
        std::io::Write::write_all(&mut w, data).map_err(io_err("write", &self.root.join("tmp")))?;
        w.commit(Some(&d))
    }

    /// Record `name` → manifest (bytes already stored as a blob), replacing what `name` pointed to. The
    /// manifest's config and layers must be in the store.
    pub fn set_name(
        &self,
        name: &str,
        manifest: &Digest,
        media_type: &str,
        size: u64,
    ) -> Result<(), StoreError> {
        self.set_names(&[(name.to_string(), manifest.clone(), media_type.to_string(), size)])
    }

    /// Several names in one index update: all or none.
    pub(crate) fn set_names(&self, names: &[(String, Digest, String, u64)]) -> Result<(), StoreError> {
        let names: Vec<(String, &Digest, &str, u64)> = names
            .iter()
            .map(|(n, d, m, s)| Ok((normalize_name(n)?, d, m.as_str(), *s)))
            .collect::<Result<_, StoreError>>()?;
        let _l = lock::exclusive(&self.root)?;
        let mut idx = index::read(&self.layout)?;
        let mut named = Vec::new();
        for (name, digest, media_type, size) in &names {
            named.extend(self.closure(name, digest)?);
            idx.set(name, digest, media_type, *size);
        }
        index::write(&self.layout, &idx)?;
        self.pins.unpin(named.iter().map(Digest::hex));
        blobs::clean_tmp(self);
        Ok(())
    }

    /// The blobs `digest` (a manifest or index) needs, checked to be present: the manifest, and its
    /// config and layers (for an index, those of this host's platform, plus the index's other entries).
    fn closure(&self, name: &str, digest: &Digest) -> Result<Vec<Digest>, StoreError> {
        let missing = |d: &Digest| StoreError::Incomplete {
            image: name.to_string(),
            blob: d.to_string(),
        };
        if !self.has_blob(digest) {
            return Err(missing(digest));
        }
        let (manifest, m) = self.image_manifest(digest).map_err(|e| StoreError::Damaged {
            image: name.to_string(),
            source: Box::new(e),
        })?;
        let mut out = vec![digest.clone(), manifest];
        let v: Value = serde_json::from_slice(&self.read_blob(digest)?).unwrap_or_default();
        out.extend(
            v["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| Digest::parse(c["digest"].as_str()?).ok()),
        );
        let mut needed = vec![&m["config"]];
        needed.extend(m["layers"].as_array().into_iter().flatten());
        for desc in needed {
            let d =
                Digest::parse(desc["digest"].as_str().unwrap_or("")).map_err(|e| StoreError::Damaged {
                    image: name.to_string(),
                    source: Box::new(e),
                })?;
            if !self.has_blob(&d) {
                return Err(missing(&d));
            }
            out.push(d);
        }
        Ok(out)
    }

    /// Make a root filesystem (a directory, or a tar / tar.gz / tar.zst) a one-layer image named `name`.
    pub fn import_rootfs(
        &self,
        source: &Path,
        name: &str,
        config: ImportConfig,
    ) -> Result<ImageRecord, StoreError> {
        import::import_rootfs(self, source, name, config)
    }

    /// Write `names` (names or ids) to one archive that `docker load`, `podman load` and
    /// `skopeo copy docker-archive:` read, and that is also an OCI image layout (`oci-archive:`).
    pub fn save(&self, names: &[&str], out: &Path) -> Result<(), StoreError> {
        save::save(self, names, out).map_err(|source| StoreError::Save {
            images: names.join(", "),
            path: out.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Load every image of a docker archive (`docker save`, `podman save`) or OCI archive
    /// (`podman save --format oci-archive`, `skopeo copy … oci-archive:`), checking every digest. All
    /// or nothing: on error the store is as it was.
    pub fn load(&self, archive: &Path) -> Result<Vec<ImageRecord>, StoreError> {
        load::load(self, archive)
    }

    /// Move a verified temp file into the layout as blob `digest` (pinned until named).
    pub(crate) fn commit_file(&self, tmp: &Path, digest: &Digest) -> Result<(), StoreError> {
        blobs::commit_file(self, tmp, digest)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}
