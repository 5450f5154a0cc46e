//! `save` and `load`: images to and from archives. Save writes the docker-archive format (`docker save`,
//! read by `podman load` and `skopeo copy docker-archive:`); load reads docker archives and OCI archives
//! (`podman save --format oci-archive`, `skopeo copy ... oci-archive:`), checking every digest.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::import::{CONFIG, LAYER_GZIP};
use super::{io_err, Digest, ImageRecord, Store, StoreError, OCI_MANIFEST};

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn archive_err(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Archive {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub fn save(store: &Store, names: &[&str], out: &Path) -> Result<(), StoreError> {
    let images: Vec<ImageRecord> = names.iter().map(|n| store.find(n)).collect::<Result<_, _>>()?;
    let tmp = out.with_extension("vessel-tmp");
    let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    let mut manifest = Vec::new();
    let mut repositories: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut written: Vec<String> = Vec::new();
    let add =
        |tar: &mut tar::Builder<_>, path: &str, data: &mut dyn Read, size: u64| -> Result<(), StoreError> {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            tar.append_data(&mut h, path, data).map_err(io_err("write", out))
        };
    for image in &images {
        let m = store.manifest(image)?;
        let config = store.read_blob(&image.config)?;
        let config_name = format!("{}.json", image.config.hex());
        if !written.contains(&config_name) {
            add(
                &mut tar,
                &config_name,
                &mut config.as_slice(),
                config.len() as u64,
            )?;
            written.push(config_name.clone());
        }
        let mut layers = Vec::new();
        for l in m.layers() {
            let d = Digest::parse(l.digest().as_ref())?;
            // docker save stores layers uncompressed, named by their diff_id's place: <digest>/layer.tar.
            let name = format!("{}/layer.tar", d.hex());
            if !written.contains(&name) {
                let blob = store.blob_path(&d);
                let mut raw = Vec::new();
                decompressed(&blob)?
                    .read_to_end(&mut raw)
                    .map_err(io_err("read", &blob))?;
                add(&mut tar, &name, &mut raw.as_slice(), raw.len() as u64)?;
                written.push(name.clone());
            }
            layers.push(name);
        }
        manifest.push(json!({ "Config": config_name, "RepoTags": [image.name], "Layers": layers }));
        if let Some((repo, tag)) = image.name.rsplit_once(':') {
            repositories
                .entry(repo.to_string())
                .or_default()
                .insert(tag.to_string(), image.config.hex().to_string());
        }
    }
    let m = serde_json::to_vec(&manifest).unwrap_or_default();
    add(&mut tar, "manifest.json", &mut m.as_slice(), m.len() as u64)?;
    let r = serde_json::to_vec(&repositories).unwrap_or_default();
    add(&mut tar, "repositories", &mut r.as_slice(), r.len() as u64)?;
    let mut w = tar.into_inner().map_err(io_err("write", out))?;
    w.flush().map_err(io_err("write", out))?;
    fs::rename(&tmp, out).map_err(io_err("rename", out))
}

/// The blob's content as a tar stream, whatever its compression.
fn decompressed(path: &Path) -> Result<Box<dyn Read>, StoreError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io_err("read", path))?;
    let f = File::open(path).map_err(io_err("open", path))?;
    let r = BufReader::new(f);
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(r)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Box::new(zstd::stream::read::Decoder::new(r).map_err(io_err("read", path))?)
        }
        _ => Box::new(r),
    })
}

fn diff_id_of(path: &Path) -> Result<Digest, StoreError> {
    let mut h = Sha256::new();
    let mut r = decompressed(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            return Ok(Digest::from_hasher(h));
        }
        h.update(&buf[..n]);
    }
}

/// Unpack the archive's plain files into a temp dir (names checked: no absolute paths, no `..`).
fn extract(store: &Store, archive: &Path) -> Result<PathBuf, StoreError> {
    let dir = store
        .root()
        .join("tmp")
        .join(format!("load-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let f = File::open(archive).map_err(io_err("open", archive))?;
    let mut ar = tar::Archive::new(BufReader::new(f));
    let entries = ar.entries().map_err(|e| archive_err(archive, e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(archive, format!("truncated or corrupt: {e}")))?;
        let kind = entry.header().entry_type();
        let path = entry
            .path()
            .map_err(|e| archive_err(archive, e.to_string()))?
            .into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(archive_err(
                archive,
                format!("entry {} escapes the archive", path.display()),
            ));
        }
        let dest = dir.join(&path);
        if kind.is_dir() {
            fs::create_dir_all(&dest).map_err(io_err("create", &dest))?;
        } else if kind.is_file() {
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p).map_err(io_err("create", p))?;
            }
            let mut out = File::create(&dest).map_err(io_err("create", &dest))?;
            io::copy(&mut entry, &mut out)
                .map_err(|e| archive_err(archive, format!("truncated or corrupt: {e}")))?;
        }
        // Symlinks (docker archives link identical layers) are resolved by name below; others are ignored.
        else if kind.is_symlink() {
            if let Ok(Some(target)) = entry.link_name() {
                let target = path.parent().unwrap_or(Path::new("")).join(target);
                if target
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir | Component::ParentDir))
                {
                    let _ = fs::write(dest.with_extension("link"), target.to_string_lossy().as_bytes());
                }
            }
        }
    }
    Ok(dir)
}

fn read_json(path: &Path, archive: &Path) -> Result<Value, StoreError> {
    let bytes = fs::read(path).map_err(|_| archive_err(archive, format!("{} is missing", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| archive_err(archive, format!("{}: {e}", path.display())))
}

/// Copy a file into the store as a blob, checking it against `expected` when known.
fn put_file(store: &Store, path: &Path, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
    let mut w = store.begin_blob()?;
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let n = io::copy(&mut f, &mut w).map_err(io_err("copy", path))?;
    Ok((w.commit(expected)?, n))
}

pub fn load(store: &Store, archive: &Path) -> Result<Vec<ImageRecord>, StoreError> {
    let dir = extract(store, archive)?;
    let result = if dir.join("manifest.json").exists() {
        load_docker(store, &dir, archive)
    } else if dir.join("index.json").exists() {
        load_oci(store, &dir, archive)
    } else {
        Err(archive_err(
            archive,
            "neither a docker archive (manifest.json) nor an OCI archive (index.json)",
        ))
    };
    let _ = fs::remove_dir_all(&dir);
    result
}

fn load_docker(store: &Store, dir: &Path, archive: &Path) -> Result<Vec<ImageRecord>, StoreError> {
    let manifest = read_json(&dir.join("manifest.json"), archive)?;
    let entries = manifest
        .as_array()
        .ok_or_else(|| archive_err(archive, "manifest.json is not a list"))?;
    // First check and store everything, then name: a failure names nothing.
    let mut named = Vec::new();
    for e in entries {
        let config_name = e["Config"]
            .as_str()
            .ok_or_else(|| archive_err(archive, "an entry has no Config"))?;
        let config_path = dir.join(config_name);
        let config = read_json(&config_path, archive)?;
        let expected_config = config_name
            .trim_end_matches(".json")
            .rsplit('/')
            .next()
            .and_then(|h| Digest::parse(&format!("sha256:{h}")).ok());
        let (config_digest, config_size) = put_file(store, &config_path, expected_config.as_ref())?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let layer_names: Vec<&str> = e["Layers"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if layer_names.len() != diff_ids.len() {
            return Err(archive_err(
                archive,
                format!(
                    "{} layers but {} diff_ids in {config_name}",
                    layer_names.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in layer_names.iter().zip(&diff_ids) {
            let mut path = dir.join(name);
            if !path.exists() {
                if let Ok(target) = fs::read_to_string(path.with_extension("link")) {
                    path = dir.join(target);
                }
            }
            if !path.exists() {
                return Err(archive_err(archive, format!("layer {name} is missing")));
            }
            let actual = diff_id_of(&path)?;
            if actual.to_string() != *diff_id {
                return Err(StoreError::DigestMismatch {
                    expected: diff_id.clone(),
                    actual: actual.to_string(),
                });
            }
            let gz = File::open(&path)
                .and_then(|mut f| {
                    let mut m = [0u8; 2];
                    f.read_exact(&mut m).map(|_| m)
                })
                .is_ok_and(|m| m == [0x1f, 0x8b]);
            let (d, size) = put_file(store, &path, None)?;
            layers.push(json!({ "mediaType": if gz { LAYER_GZIP } else { LAYER_TAR }, "digest": d.to_string(), "size": size }));
        }
        let m = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": CONFIG, "digest": config_digest.to_string(), "size": config_size },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&m).unwrap_or_default();
        let md = store.put_blob_bytes(&bytes)?;
        let tags: Vec<String> = e["RepoTags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let tags = if tags.is_empty() {
            vec![format!("localhost/loaded-{}:latest", &config_digest.hex()[..12])]
        } else {
            tags
        };
        for t in tags {
            named.push((t, md.clone(), bytes.len() as u64));
        }
    }
    name_all(store, named)
}

fn name_all(store: &Store, named: Vec<(String, Digest, u64)>) -> Result<Vec<ImageRecord>, StoreError> {
    let names: Vec<String> = named
        .iter()
        .map(|(n, _, _)| super::normalize_name(n))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (name, (_, digest, size)) in names.iter().zip(&named) {
        store.set_name(name, digest, OCI_MANIFEST, *size)?;
        out.push(store.find(name)?);
    }
    Ok(out)
}

fn load_oci(store: &Store, dir: &Path, archive: &Path) -> Result<Vec<ImageRecord>, StoreError> {
    let blobs = dir.join("blobs/sha256");
    let entries =
        fs::read_dir(&blobs).map_err(|_| archive_err(archive, "OCI archive without blobs/sha256"))?;
    for e in entries.flatten() {
        let hex = e.file_name().to_string_lossy().to_string();
        let expected = Digest::parse(&format!("sha256:{hex}"))?;
        put_file(store, &e.path(), Some(&expected))?;
    }
    let index = read_json(&dir.join("index.json"), archive)?;
    let mut named = Vec::new();
    for d in index["manifests"].as_array().cloned().unwrap_or_default() {
        let digest = Digest::parse(d["digest"].as_str().unwrap_or(""))?;
        if !store.has_blob(&digest) {
            return Err(archive_err(archive, format!("manifest {digest} is missing")));
        }
        let manifest: Value = serde_json::from_slice(&store.read_blob(&digest)?)
            .map_err(|e| archive_err(archive, e.to_string()))?;
        // An index of manifests (multi-platform): take linux/amd64.
        let (digest, size) = if manifest["manifests"].is_array() {
            let pick = manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
                .ok_or_else(|| archive_err(archive, "no linux/amd64 image in the index"))?;
            (
                Digest::parse(pick["digest"].as_str().unwrap_or(""))?,
                pick["size"].as_u64().unwrap_or(0),
            )
        } else {
            (digest, d["size"].as_u64().unwrap_or(0))
        };
        let ref_name = d["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or("");
        let name = if ref_name.is_empty() {
            format!("localhost/loaded-{}:latest", &digest.hex()[..12])
        } else if crate::reference::Reference::parse(ref_name).is_ok()
            && (ref_name.contains('/') || ref_name.contains(':'))
        {
            ref_name.to_string()
        } else {
            format!("localhost/loaded:{ref_name}")
        };
        named.push((name, digest, size));
    }
    name_all(store, named)
}
