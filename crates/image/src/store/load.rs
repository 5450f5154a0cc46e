//! `load`: the images of a docker archive (`docker save`, `podman save`: manifest.json, configs, layer tars)
//! or an OCI archive (`podman save --format oci-archive`, `skopeo copy … oci-archive:`: index.json and
//! blobs/sha256), plain or compressed with gzip or zstd.
//!
//! All or nothing: the archive's files are first streamed into a staging dir under `<root>/tmp` (hashed on
//! the way), then every digest is checked (blob names, descriptor sizes, a docker archive's layers against
//! its config's diff ids), and only then are blobs moved into the layout and the names recorded in one
//! index update. On any error the staging dir goes and the store is as it was.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::blobs::{self, tmp_name};
use super::compression::{open_decompressed, Compression};
use super::digest::HashWriter;
use super::save::CONTAINERD_NAME;
use super::{
    gc, host_arch, io_err, lock, normalize_name, Digest, ImageRecord, Store, StoreError, OCI_CONFIG,
    OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::store::index::REF_NAME;

/// JSON files (manifests, configs, index) larger than this are refused.
const JSON_MAX: u64 = 16 << 20;

fn bad(reason: impl Into<String>) -> StoreError {
    StoreError::BadArchive(reason.into())
}

/// A file of the archive, in the staging dir.
#[derive(Debug, Clone)]
struct Staged {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

/// The archive's files, streamed into `<root>/tmp/load-*` (leased, removed on drop).
struct Staging {
    dir: PathBuf,
    _lease: File,
    files: HashMap<String, Staged>,
    /// Symlinks and hard links of the archive: name → target name.
    links: HashMap<String, String>,
    count: u64,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `a/./b/` → `a/b`; None for names leaving the archive (`..`) or empty.
fn clean(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Staging {
    fn extract(store: &Store, archive: &Path) -> Result<Staging, StoreError> {
        let dir = store.root().join("tmp").join(tmp_name("load"));
        fs::create_dir(&dir).map_err(io_err("create", &dir))?;
        let lease = File::open(&dir).map_err(io_err("open", &dir))?;
        lock::lease(&lease).map_err(io_err("lock", &dir))?;
        let mut s = Staging {
            dir,
            _lease: lease,
            files: HashMap::new(),
            links: HashMap::new(),
            count: 0,
        };
        let (_, reader) = open_decompressed(archive)?;
        let corrupt = |e: io::Error| bad(format!("The archive is truncated or not a tar archive: {e}"));
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = clean(&raw) else { continue };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let size = entry.header().size().map_err(corrupt)?;
                s.count += 1;
                let path = s.dir.join(s.count.to_string());
                let file = File::create(&path).map_err(io_err("create", &path))?;
                let mut w = HashWriter::new(io::BufWriter::new(file));
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = entry.read(&mut buf).map_err(corrupt)?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n]).map_err(io_err("write", &path))?;
                }
                if w.written != size {
                    return Err(bad(format!(
                        "The archive is truncated: {raw} has {} of its {size} bytes",
                        w.written
                    )));
                }
                let digest = w.digest();
                w.inner
                    .into_inner()
                    .map_err(|e| io_err("write", &path)(e.into_error()))?;
                s.files.insert(name.clone(), Staged { path, digest, size });
                s.links.remove(&name);
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                // A symlink is relative to its directory, a hard link to the archive's root.
                let target = if kind.is_symlink() && !target.starts_with('/') {
                    format!("{}/{target}", name.rsplit_once('/').map_or("", |(d, _)| d))
                } else {
                    target
                };
                if let Some(t) = clean(&target) {
                    s.links.insert(name.clone(), t);
                    s.files.remove(&name);
                }
            }
        }
        Ok(s)
    }

    fn get(&self, name: &str) -> Option<&Staged> {
        let mut name = clean(name)?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&name) {
                return Some(f);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    fn need(&self, name: &str) -> Result<&Staged, StoreError> {
        self.get(name)
            .ok_or_else(|| bad(format!("{name} is missing from the archive")))
    }

    fn json(&self, name: &str) -> Result<Value, StoreError> {
        let f = self.need(name)?;
        if f.size > JSON_MAX {
            return Err(bad(format!("{name} is too large ({} bytes)", f.size)));
        }
        let bytes = fs::read(&f.path).map_err(io_err("read", &f.path))?;
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("{name} is not valid JSON: {e}")))
    }

    /// The blob `digest` of an OCI layout, checked.
    fn blob(&self, digest: &Digest, size: Option<u64>) -> Result<&Staged, StoreError> {
        let f = self.need(&format!("blobs/sha256/{}", digest.hex()))?;
        if &f.digest != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.to_string(),
                actual: f.digest.to_string(),
            });
        }
        if let Some(s) = size.filter(|&s| s != f.size) {
            return Err(bad(format!(
                "Blob {digest} has {} bytes, its descriptor says {s}",
                f.size
            )));
        }
        Ok(f)
    }

    /// A file of our own (a manifest made for a docker archive's image) to commit with the rest.
    fn add(&mut self, data: &[u8]) -> Result<Staged, StoreError> {
        self.count += 1;
        let path = self.dir.join(self.count.to_string());
        fs::write(&path, data).map_err(io_err("write", &path))?;
        Ok(Staged {
            path,
            digest: Digest::of(data),
            size: data.len() as u64,
        })
    }
}

/// One image to name: its manifest and every blob it needs, all staged and checked.
struct Planned {
    names: Vec<String>,
    manifest: Staged,
    media_type: String,
    blobs: Vec<Staged>,
}

pub fn load(store: &Store, archive: &Path) -> Result<Vec<ImageRecord>, StoreError> {
    let at = |what: String| {
        move |e| StoreError::Load {
            what,
            source: Box::new(e),
        }
    };
    let whole = archive.display().to_string();
    let mut staging = Staging::extract(store, archive).map_err(at(whole.clone()))?;
    let plans = if staging.get("index.json").is_some() {
        plan_oci(&staging, archive)?
    } else if staging.get("manifest.json").is_some() {
        plan_docker(&mut staging, archive)?
    } else {
        return Err(at(whole)(bad(
            "It is neither a docker archive (no manifest.json) nor an OCI archive (no index.json)",
        )));
    };
    if plans.is_empty() {
        return Err(at(whole)(bad("It holds no image")));
    }
    let all_names = plans
        .iter()
        .flat_map(|p| p.names.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let what = format!("{all_names} from {whole}");
    let mut committed: Vec<Digest> = Vec::new();
    let result = commit(store, &plans, &mut committed);
    if let Err(e) = result {
        gc::discard(store, &committed);
        return Err(at(what)(e));
    }
    let names: Vec<&String> = plans.iter().flat_map(|p| &p.names).collect();
    names
        .iter()
        .map(|n| store.find(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(at(what))
}

fn commit(store: &Store, plans: &[Planned], committed: &mut Vec<Digest>) -> Result<(), StoreError> {
    for p in plans {
        for b in p.blobs.iter().chain(std::iter::once(&p.manifest)) {
            if committed.contains(&b.digest) {
                continue;
            }
            if !blobs::pin_existing(store, &b.digest)? {
                store.commit_file(&b.path, &b.digest)?;
            }
            committed.push(b.digest.clone());
        }
    }
    let names: Vec<(String, Digest, String, u64)> = plans
        .iter()
        .flat_map(|p| {
            p.names.iter().map(|n| {
                (
                    n.clone(),
                    p.manifest.digest.clone(),
                    p.media_type.clone(),
                    p.manifest.size,
                )
            })
        })
        .collect();
    store.set_names(&names)
}

/// Names for an image of the archive, normalised; none given → `localhost/loaded-<id>:latest`.
fn names_of(given: Vec<String>, config: &Digest) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for n in given {
        let n = normalize_name(&n)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.is_empty() {
        out.push(format!("localhost/loaded-{}:latest", &config.hex()[..12]));
    }
    Ok(out)
}

fn plan_oci(staging: &Staging, archive: &Path) -> Result<Vec<Planned>, StoreError> {
    let at = |what: String| {
        move |e| StoreError::Load {
            what,
            source: Box::new(e),
        }
    };
    let whole = archive.display().to_string();
    let index = staging.json("index.json").map_err(at(whole.clone()))?;
    let descriptors = index["manifests"]
        .as_array()
        .ok_or_else(|| at(whole.clone())(bad("index.json lists no manifests")))?;
    // A docker 25 archive also has manifest.json, whose RepoTags name images by config.
    let docker_tags = staging.json("manifest.json").ok().map(|m| {
        m.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["Config"].as_str().unwrap_or("").to_string(),
                    e["RepoTags"].clone(),
                )
            })
            .collect::<Vec<_>>()
    });
    let mut plans: Vec<Planned> = Vec::new();
    for d in descriptors {
        let ann = &d["annotations"];
        let label = ann[CONTAINERD_NAME]
            .as_str()
            .or(ann[REF_NAME].as_str())
            .unwrap_or("")
            .to_string();
        let what = if label.is_empty() {
            whole.clone()
        } else {
            format!("{label} from {whole}")
        };
        let plan = (|| {
            let digest = Digest::parse(d["digest"].as_str().unwrap_or(""))?;
            let mut manifest = staging.blob(&digest, d["size"].as_u64())?.clone();
            let mut media_type = d["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
            let mut m = staging.json(&format!("blobs/sha256/{}", digest.hex()))?;
            let mut blobs = Vec::new();
            if let Some(list) = m["manifests"].as_array() {
                // An index: the image for this host's platform.
                let pick = list
                    .iter()
                    .find(|c| c["platform"]["os"] == "linux" && c["platform"]["architecture"] == host_arch())
                    .or(if list.len() == 1 { list.first() } else { None })
                    .ok_or_else(|| bad(format!("Index {digest} has no linux/{} image", host_arch())))?
                    .clone();
                let child = Digest::parse(pick["digest"].as_str().unwrap_or(""))?;
                manifest = staging.blob(&child, pick["size"].as_u64())?.clone();
                media_type = pick["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
                m = staging.json(&format!("blobs/sha256/{}", child.hex()))?;
            }
            if m["manifests"].is_array() || !m["config"].is_object() {
                return Err(bad(format!(
                    "Manifest {} is not an image manifest",
                    manifest.digest
                )));
            }
            let config = Digest::parse(m["config"]["digest"].as_str().unwrap_or(""))?;
            blobs.push(staging.blob(&config, m["config"]["size"].as_u64())?.clone());
            for l in m["layers"].as_array().into_iter().flatten() {
                let ld = Digest::parse(l["digest"].as_str().unwrap_or(""))?;
                blobs.push(staging.blob(&ld, l["size"].as_u64())?.clone());
            }
            let mut given: Vec<String> = ann[CONTAINERD_NAME]
                .as_str()
                .map(String::from)
                .into_iter()
                .collect();
            if given.is_empty() {
                let config_path = format!("blobs/sha256/{}", config.hex());
                for (c, tags) in docker_tags.iter().flatten() {
                    if clean(c).as_deref() == Some(config_path.as_str()) {
                        given.extend(
                            tags.as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|t| t.as_str().map(String::from)),
                        );
                    }
                }
            }
            if given.is_empty() {
                given.extend(ann[REF_NAME].as_str().filter(|s| !s.is_empty()).map(String::from));
            }
            let names = names_of(given, &config)?;
            Ok(Planned {
                names,
                manifest,
                media_type,
                blobs,
            })
        })()
        .map_err(at(what))?;
        merge(&mut plans, plan);
    }
    Ok(plans)
}

/// Two entries for one manifest (several names) become one plan.
fn merge(plans: &mut Vec<Planned>, plan: Planned) {
    if let Some(p) = plans
        .iter_mut()
        .find(|p| p.manifest.digest == plan.manifest.digest)
    {
        for n in plan.names {
            if !p.names.contains(&n) {
                p.names.push(n);
            }
        }
    } else {
        plans.push(plan);
    }
}

fn plan_docker(staging: &mut Staging, archive: &Path) -> Result<Vec<Planned>, StoreError> {
    let at = |what: String| {
        move |e| StoreError::Load {
            what,
            source: Box::new(e),
        }
    };
    let whole = archive.display().to_string();
    let manifest = staging.json("manifest.json").map_err(at(whole.clone()))?;
    let entries = manifest
        .as_array()
        .ok_or_else(|| at(whole.clone())(bad("manifest.json is not a list")))?
        .clone();
    let mut plans = Vec::new();
    for e in &entries {
        let tags: Vec<String> = e["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        let what = if tags.is_empty() {
            whole.clone()
        } else {
            format!("{} from {whole}", tags.join(", "))
        };
        let plan = plan_docker_image(staging, e, tags).map_err(at(what))?;
        merge(&mut plans, plan);
    }
    Ok(plans)
}

fn plan_docker_image(staging: &mut Staging, e: &Value, tags: Vec<String>) -> Result<Planned, StoreError> {
    let config_name = e["Config"]
        .as_str()
        .ok_or_else(|| bad("An entry of manifest.json has no Config"))?;
    let config = staging.need(config_name)?.clone();
    // `<hex>.json` (docker, podman) or `blobs/sha256/<hex>` (docker 25): the name is the digest.
    let stem = config_name
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_end_matches(".json");
    if super::digest::is_hex64(stem) && stem != config.digest.hex() {
        return Err(StoreError::DigestMismatch {
            expected: format!("sha256:{stem}"),
            actual: config.digest.to_string(),
        });
    }
    let cfg = staging.json(config_name)?;
    let diff_ids: Vec<&str> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let layer_names: Vec<&str> = e["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if layer_names.len() != diff_ids.len() {
        return Err(bad(format!(
            "manifest.json lists {} layers but config {config_name} has {} diff ids",
            layer_names.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    let mut blobs = vec![config.clone()];
    for (name, diff_id) in layer_names.iter().zip(&diff_ids) {
        let layer = staging.need(name)?.clone();
        if let Some(hex) = name
            .strip_prefix("blobs/sha256/")
            .filter(|h| super::digest::is_hex64(h))
        {
            if hex != layer.digest.hex() {
                return Err(StoreError::DigestMismatch {
                    expected: format!("sha256:{hex}"),
                    actual: layer.digest.to_string(),
                });
            }
        }
        let (media_type, actual) = diff_id_of(&layer)?;
        if actual.as_str() != *diff_id {
            return Err(bad(format!(
                "Layer {name} does not match its diff id: expected {diff_id}, got {actual}"
            )));
        }
        layers
            .push(json!({ "mediaType": media_type, "digest": layer.digest.to_string(), "size": layer.size }));
        blobs.push(layer);
    }
    let m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config.digest.to_string(), "size": config.size },
        "layers": layers,
    });
    let manifest = staging.add(&serde_json::to_vec(&m).unwrap_or_default())?;
    let names = names_of(tags, &config.digest)?;
    Ok(Planned {
        names,
        manifest,
        media_type: OCI_MANIFEST.to_string(),
        blobs,
    })
}

/// A layer file's media type (by its compression) and diff id (digest of the uncompressed tar).
fn diff_id_of(layer: &Staged) -> Result<(&'static str, Digest), StoreError> {
    let corrupt = |e: io::Error| bad(format!("A layer is corrupt: {e}"));
    let (kind, mut reader) = open_decompressed(&layer.path)?;
    let media_type = match kind {
        Compression::Gzip => OCI_LAYER_GZIP,
        Compression::Zstd => OCI_LAYER_ZSTD,
        Compression::None => return Ok((OCI_LAYER, layer.digest.clone())),
    };
    let (d, _) = Digest::of_reader(&mut reader).map_err(corrupt)?;
    Ok((media_type, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        assert_eq!(clean("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(clean("a/../b").as_deref(), Some("b"));
        assert_eq!(clean("../x"), None);
        assert_eq!(clean("./"), None);
        assert_eq!(clean("/abs/x").as_deref(), Some("abs/x"));
    }
}
