//! index.json of the layout: one manifest descriptor per name (annotation org.opencontainers.image.ref.name),
//! as skopeo, umoci and podman write it. Descriptors and fields we do not know are kept as found; the file is
//! rewritten atomically (temp file, fsync, rename, fsync of the directory).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use super::{io_err, Digest, StoreError, OCI_INDEX};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One descriptor of index.json.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The ref name annotation ("" when absent).
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    raw: Value,
}

impl Entry {
    fn holder(&self) -> Option<&str> {
        self.raw["annotations"][HOLD].as_str()
    }
}

/// The annotation of an index entry that holds an image for someone (an instance made from it).
pub const HOLD: &str = "io.vessel.hold";

#[derive(Debug, Default)]
pub struct Index {
    pub entries: Vec<Entry>,
    /// The rest of the top-level object (annotations a tool put there), kept as found.
    top: serde_json::Map<String, Value>,
}

impl Index {
    pub fn named(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| !e.name.is_empty())
    }

    /// Point `name` at a manifest, replacing whatever it pointed at.
    pub fn set(&mut self, name: &str, digest: &Digest, media_type: &str, size: u64) {
        self.remove_names(&[name.to_string()]);
        let raw = json!({
            "mediaType": media_type, "digest": digest.to_string(), "size": size,
            "annotations": { REF_NAME: name },
        });
        self.entries.push(Entry {
            name: name.to_string(),
            digest: digest.clone(),
            media_type: media_type.to_string(),
            size,
            raw,
        });
    }

    /// Keep `digest` (and what it reaches) for `holder` whatever happens to names: an unnamed entry that
    /// only vessel reads (other tools see an extra, unnamed manifest).
    pub fn hold(&mut self, holder: &str, digest: &Digest, media_type: &str, size: u64) {
        self.release(holder);
        let raw = json!({
            "mediaType": media_type, "digest": digest.to_string(), "size": size,
            "annotations": { HOLD: holder },
        });
        self.entries.push(Entry {
            name: String::new(),
            digest: digest.clone(),
            media_type: media_type.to_string(),
            size,
            raw,
        });
    }

    /// The manifest `holder` holds.
    pub fn held(&self, holder: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.holder() == Some(holder))
    }

    pub fn release(&mut self, holder: &str) {
        self.entries.retain(|e| e.holder() != Some(holder));
    }

    pub fn holders(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(Entry::holder)
    }

    pub fn remove_names(&mut self, names: &[String]) {
        self.entries.retain(|e| !names.contains(&e.name));
    }

    pub fn parse(bytes: &[u8], path: &Path) -> Result<Index, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            what: path.display().to_string(),
            reason,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let Value::Object(mut top) = v else {
            return Err(corrupt("not a JSON object".into()));
        };
        let manifests = match top.remove("manifests") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(corrupt("\"manifests\" is not a list".into())),
        };
        let mut idx = Index {
            entries: Vec::new(),
            top,
        };
        for d in manifests {
            let digest = Digest::parse(d["digest"].as_str().unwrap_or(""))
                .map_err(|e| corrupt(format!("a descriptor has a bad digest: {e}")))?;
            idx.entries.push(Entry {
                name: d["annotations"][REF_NAME].as_str().unwrap_or("").to_string(),
                digest,
                media_type: d["mediaType"].as_str().unwrap_or("").to_string(),
                size: d["size"].as_u64().unwrap_or(0),
                raw: d,
            });
        }
        Ok(idx)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut top = self.top.clone();
        top.insert("schemaVersion".into(), json!(2));
        top.insert("mediaType".into(), json!(OCI_INDEX));
        top.insert(
            "manifests".into(),
            Value::Array(self.entries.iter().map(|e| e.raw.clone()).collect()),
        );
        serde_json::to_vec(&Value::Object(top)).unwrap_or_default()
    }
}

pub fn read(layout: &Path) -> Result<Index, StoreError> {
    let path = layout.join("index.json");
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    Index::parse(&bytes, &path)
}

pub fn write(layout: &Path, idx: &Index) -> Result<(), StoreError> {
    write_atomic(&layout.join("index.json"), &idx.to_bytes())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Prefix of the temp files `write_atomic` leaves behind if it dies before its rename.
pub const TMP_PREFIX: &str = ".vessel-tmp-";

/// Write via a temp file in the same directory, fsync, rename, fsync the directory: readers see the old
/// file or the new one, and after a crash it is one of the two.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("replace", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_it_does_not_know() {
        let d = Digest::of(b"m");
        let text = format!(
            r#"{{"schemaVersion":2,"annotations":{{"x":"y"}},"manifests":[
            {{"mediaType":"m","digest":"{d}","size":1,"platform":{{"os":"linux"}}}},
            {{"mediaType":"m","digest":"{d}","size":1,"annotations":{{"{REF_NAME}":"a"}}}}]}}"#
        );
        let mut idx = Index::parse(text.as_bytes(), Path::new("index.json")).unwrap();
        assert_eq!(idx.named().count(), 1);
        idx.set("b", &d, "m", 1);
        idx.set("a", &d, "m2", 2);
        let v: Value = serde_json::from_slice(&idx.to_bytes()).unwrap();
        assert_eq!(v["annotations"]["x"], "y");
        assert_eq!(v["manifests"][0]["platform"]["os"], "linux");
        assert_eq!(v["manifests"].as_array().unwrap().len(), 3);
        assert_eq!(v["manifests"][2]["mediaType"], "m2");
        let e = Index::parse(b"[]", Path::new("/x/index.json"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Corrupt /x/index.json"), "{e}");
    }
}
