//! `save`: images to one tar archive in both formats at once, as docker 25 writes them:
//! - an OCI image layout (`oci-layout`, `index.json` with one descriptor per name, `blobs/sha256/*`), read by
//!   `skopeo copy oci-archive:` and `podman load`;
//! - a docker archive (`manifest.json` with Config / RepoTags / Layers paths into `blobs/sha256`, and
//!   `repositories`), read by `docker load`, `podman load` and `skopeo copy docker-archive:` (they accept
//!   compressed layer files).
//!
//! Every blob is checked against its digest on the way out. The archive is written beside `out` and
//! renamed into place when complete.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::blobs::tmp_name;
use super::index::{sync_dir, REF_NAME};
use super::{io_err, Digest, ImageRecord, Store, StoreError, OCI_LAYOUT, OCI_MANIFEST};
use crate::reference::Reference;

/// The annotation containerd (and docker 25) put the full image name in.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One manifest and the names pointing at it.
struct Group {
    manifest: Digest,
    media_type: String,
    size: u64,
    config: Digest,
    layers: Vec<Digest>,
    names: Vec<String>,
}

pub fn save(store: &Store, names: &[&str], out: &Path) -> Result<(), StoreError> {
    if names.is_empty() {
        return Err(StoreError::BadArchive("No image to save was given".into()));
    }
    let mut images: Vec<ImageRecord> = Vec::new();
    for n in names {
        let r = store.find(n)?;
        if !images.iter().any(|i| i.name == r.name) {
            images.push(r);
        }
    }
    let mut groups: Vec<Group> = Vec::new();
    for image in images {
        if let Some(g) = groups.iter_mut().find(|g| g.manifest == image.manifest) {
            g.names.push(image.name);
            continue;
        }
        let bytes = store.read_blob(&image.manifest)?;
        let m: Value = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: format!("manifest {} of {}", image.manifest, image.name),
            reason: e.to_string(),
        })?;
        let layers = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| Digest::parse(l["digest"].as_str().unwrap_or("")))
            .collect::<Result<Vec<_>, _>>()?;
        groups.push(Group {
            manifest: image.manifest.clone(),
            media_type: m["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string(),
            size: bytes.len() as u64,
            config: image.config.clone(),
            layers,
            names: vec![image.name],
        });
    }

    // A pipe or device (`-o /dev/stdout`) is written straight; a file is written beside and renamed.
    if fs::metadata(out).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return write_archive(store, &groups, out, true);
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}", tmp_name("save")));
    let result = write_archive(store, &groups, &tmp, false);
    let result = result.and_then(|()| fs::rename(&tmp, out).map_err(io_err("rename into", out)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir)
}

fn write_archive(store: &Store, groups: &[Group], tmp: &Path, stream: bool) -> Result<(), StoreError> {
    let file = if stream {
        File::options()
            .write(true)
            .open(tmp)
            .map_err(io_err("open", tmp))?
    } else {
        File::create(tmp).map_err(io_err("create", tmp))?
    };
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let werr = |e: io::Error| io_err("write", tmp)(e);
    for d in ["blobs/", "blobs/sha256/"] {
        let mut h = header(tar::EntryType::Directory, 0);
        h.set_mode(0o755);
        tar.append_data(&mut h, d, io::empty()).map_err(werr)?;
    }
    append_bytes(&mut tar, "oci-layout", OCI_LAYOUT.as_bytes()).map_err(werr)?;
    let mut written: Vec<&Digest> = Vec::new();
    for g in groups {
        for d in std::iter::once(&g.manifest)
            .chain(std::iter::once(&g.config))
            .chain(&g.layers)
        {
            if !written.contains(&d) {
                append_blob(store, &mut tar, d, tmp, &g.names[0])?;
                written.push(d);
            }
        }
    }
    let mut descriptors = Vec::new();
    let mut docker = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for g in groups {
        for name in &g.names {
            descriptors.push(json!({
                "mediaType": g.media_type, "digest": g.manifest.to_string(), "size": g.size,
                "annotations": { REF_NAME: name, CONTAINERD_NAME: name },
            }));
            if let Ok(r) = Reference::parse(name) {
                if let (Some(tag), Some(top)) = (&r.tag, g.layers.last()) {
                    repositories
                        .entry(r.name())
                        .or_default()
                        .insert(tag.clone(), top.hex().to_string());
                }
            }
        }
        docker.push(json!({
            "Config": format!("blobs/sha256/{}", g.config.hex()),
            "RepoTags": g.names,
            "Layers": g.layers.iter().map(|l| format!("blobs/sha256/{}", l.hex())).collect::<Vec<_>>(),
        }));
    }
    let index = json!({ "schemaVersion": 2, "mediaType": super::OCI_INDEX, "manifests": descriptors });
    append_bytes(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&index).unwrap_or_default(),
    )
    .map_err(werr)?;
    append_bytes(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&docker).unwrap_or_default(),
    )
    .map_err(werr)?;
    append_bytes(
        &mut tar,
        "repositories",
        &serde_json::to_vec(&repositories).unwrap_or_default(),
    )
    .map_err(werr)?;
    let w = tar.into_inner().map_err(werr)?;
    let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
    if stream {
        return Ok(());
    }
    file.sync_all().map_err(io_err("sync", tmp))
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    tar.append_data(
        &mut header(tar::EntryType::Regular, data.len() as u64),
        path,
        data,
    )
}

/// Copy a blob into the archive, failing if its content does not match its digest.
fn append_blob<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    d: &Digest,
    tmp: &Path,
    image: &str,
) -> Result<(), StoreError> {
    let path = store.blob_path(d);
    let damaged = |source| StoreError::Damaged {
        image: image.to_string(),
        source: Box::new(source),
    };
    let f = File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::Incomplete {
                image: image.to_string(),
                blob: d.to_string(),
            }
        } else {
            io_err("open", &path)(e)
        }
    })?;
    let size = f.metadata().map_err(io_err("stat", &path))?.len();
    let mut reader = Hashing {
        inner: f.take(size),
        hasher: Sha256::new(),
        read: 0,
    };
    tar.append_data(
        &mut header(tar::EntryType::Regular, size),
        format!("blobs/sha256/{}", d.hex()),
        &mut reader,
    )
    .map_err(io_err("write", tmp))?;
    let actual = Digest::from_hasher(reader.hasher);
    if reader.read != size {
        return Err(damaged(StoreError::Corrupt {
            what: format!("blob {d}"),
            reason: "it changed size while read".into(),
        }));
    }
    if &actual != d {
        return Err(damaged(StoreError::DigestMismatch {
            expected: d.to_string(),
            actual: actual.to_string(),
        }));
    }
    Ok(())
}

struct Hashing<R: Read> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}
