//! index.json of the layout: one manifest descriptor per name (annotation org.opencontainers.image.ref.name),
//! rewritten atomically.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use super::{io_err, Digest, Store, StoreError};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct Entry {
    pub name: String,
    pub digest: Digest,
}

#[derive(Default)]
pub struct Index {
    /// Descriptors as found (unknown fields kept), with their parsed digest.
    pub manifests: Vec<Entry>,
    raw: Vec<Value>,
}

impl Index {
    pub fn named(&self) -> Vec<&Entry> {
        self.manifests.iter().filter(|e| !e.name.is_empty()).collect()
    }

    pub fn set(&mut self, name: &str, digest: &Digest, media_type: &str, size: u64) {
        self.remove_names(&[name.to_string()]);
        self.raw.push(json!({
            "mediaType": media_type, "digest": digest.to_string(), "size": size,
            "annotations": { REF_NAME: name },
        }));
        self.manifests.push(Entry {
            name: name.to_string(),
            digest: digest.clone(),
        });
    }

    pub fn remove_names(&mut self, names: &[String]) {
        let keep: Vec<bool> = self.manifests.iter().map(|e| !names.contains(&e.name)).collect();
        let mut i = 0;
        self.raw.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        let mut j = 0;
        self.manifests.retain(|_| {
            j += 1;
            keep[j - 1]
        });
    }
}

pub fn read(store: &Store) -> Result<Index, StoreError> {
    let path = store.layout().join("index.json");
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    let corrupt = |reason: String| StoreError::Corrupt {
        what: path.display().to_string(),
        reason,
    };
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut idx = Index::default();
    for d in v["manifests"].as_array().cloned().unwrap_or_default() {
        let digest = Digest::parse(d["digest"].as_str().unwrap_or(""))?;
        let name = d["annotations"][REF_NAME].as_str().unwrap_or("").to_string();
        idx.manifests.push(Entry { name, digest });
        idx.raw.push(d);
    }
    Ok(idx)
}

pub fn write(store: &Store, idx: &Index) -> Result<(), StoreError> {
    let v = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": idx.raw });
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    write_atomic(store, &store.layout().join("index.json"), &bytes)
}

/// Write via a temp file in the same directory, fsync, rename: readers see the old or the new file.
pub fn write_atomic(_store: &Store, path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(data).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename", path))
}
