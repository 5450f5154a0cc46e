//! `vessel image import`: a root filesystem (a directory, or a tar / tar.gz / tar.zst) becomes a one-layer
//! image: a gzip layer (from a directory, a deterministic tar: see rootfs_tar.rs), an OCI config (runtime
//! settings from [`ImportConfig`], rootfs diff id, history, created time, linux/amd64) and an OCI manifest.

use std::io::{self, Read, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use serde_json::json;

use super::compression::open_decompressed;
use super::digest::HashWriter;
use super::{
    gc, host_arch, io_err, normalize_name, rootfs_tar, Digest, ImageRecord, Store, StoreError, OCI_CONFIG,
    OCI_LAYER_GZIP, OCI_MANIFEST,
};

/// The new image's runtime config (a Dockerfile's CMD, ENTRYPOINT, ENV, WORKDIR, USER).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportConfig {
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn import_rootfs(
    store: &Store,
    source: &Path,
    name: &str,
    cfg: ImportConfig,
) -> Result<ImageRecord, StoreError> {
    let name = normalize_name(name)?;
    let mut committed = Vec::new();
    let result = import(store, source, &name, &cfg, &mut committed);
    if result.is_err() {
        gc::discard(store, &committed);
    }
    result.map_err(|e| StoreError::Import {
        image: format!("{name} from {}", source.display()),
        source: Box::new(e),
    })
}

fn import(
    store: &Store,
    source: &Path,
    name: &str,
    cfg: &ImportConfig,
    committed: &mut Vec<Digest>,
) -> Result<ImageRecord, StoreError> {
    let meta = std::fs::metadata(source).map_err(io_err("read", source))?;
    let blob = store.begin_blob()?;
    let tmp_dir = store.root().join("tmp");
    // blob ← gzip ← hash (the diff id is the digest of the uncompressed tar) ← tar
    let mut tar = HashWriter::new(GzEncoder::new(blob, flate2::Compression::default()));
    if meta.is_dir() {
        tar = rootfs_tar::write_tree(source, tar).map_err(io_err("archive", source))?;
    } else {
        copy_tar(source, &mut tar)?;
    }
    let diff_id = tar.digest();
    let blob = tar
        .inner
        .finish()
        .map_err(io_err("write a layer into", &tmp_dir))?;
    let layer_size = blob.offset();
    let layer = blob.commit(None)?;
    committed.push(layer.clone());

    let now = now_rfc3339();
    let mut env: Vec<String> = Vec::new();
    if !cfg.env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    env.extend(cfg.env.iter().cloned());
    let mut runtime = json!({ "Env": env });
    if !cfg.cmd.is_empty() {
        runtime["Cmd"] = json!(cfg.cmd);
    }
    if !cfg.entrypoint.is_empty() {
        runtime["Entrypoint"] = json!(cfg.entrypoint);
    }
    if let Some(w) = &cfg.workdir {
        runtime["WorkingDir"] = json!(w);
    }
    if let Some(u) = &cfg.user {
        runtime["User"] = json!(u);
    }
    let config = json!({
        "created": now, "architecture": host_arch(), "os": "linux", "config": runtime,
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [{ "created": now, "created_by": format!("vessel image import {}", source.display()) }],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = store.put_blob_bytes(&config_bytes)?;
    committed.push(config_digest.clone());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len() },
        "layers": [{ "mediaType": OCI_LAYER_GZIP, "digest": layer.to_string(), "size": layer_size }],
        "annotations": { "org.opencontainers.image.created": now },
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let manifest_digest = store.put_blob_bytes(&manifest_bytes)?;
    committed.push(manifest_digest.clone());
    store.set_name(name, &manifest_digest, OCI_MANIFEST, manifest_bytes.len() as u64)?;
    store.find(name)
}

/// Copy a tar file (plain, gzip or zstd) into `out` uncompressed and byte for byte, checking on the way
/// that it is a tar archive with at least one entry.
fn copy_tar<W: Write>(source: &Path, out: &mut W) -> Result<(), StoreError> {
    let (_, reader) = open_decompressed(source)?;
    let bad = |e: io::Error| StoreError::Corrupt {
        what: format!("tar archive {}", source.display()),
        reason: e.to_string(),
    };
    let mut archive = tar::Archive::new(Tee { inner: reader, out });
    let mut count = 0u64;
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        entry.path().map_err(bad)?;
        count += 1;
    }
    if count == 0 {
        return Err(bad(io::Error::other("it has no entries (not a tar archive?)")));
    }
    // The end-of-archive blocks and anything after them, so the layer is exactly the source.
    let mut tee = archive.into_inner();
    io::copy(&mut tee.inner, &mut tee.out).map_err(bad)?;
    Ok(())
}

/// Copies what is read from `inner` to `out`.
struct Tee<'a, R: Read, W: Write> {
    inner: R,
    out: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Now as RFC 3339 in UTC, seconds precision; `SOURCE_DATE_EPOCH` (reproducible builds) overrides the clock.
pub(super) fn now_rfc3339() -> String {
    if let Some(secs) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        return rfc3339(secs);
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs as i64)
}

/// Civil date from days since the epoch (Howard Hinnant's algorithm).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
