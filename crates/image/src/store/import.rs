//! `vessel image import`: a root filesystem (a directory, or a tar / tar.gz) becomes a one-layer image.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{io_err, Digest, ImageRecord, Store, StoreError, OCI_MANIFEST};

/// The new image's runtime config (Dockerfile's CMD, ENTRYPOINT, ENV, WORKDIR, USER).
#[derive(Debug, Clone, Default)]
pub struct ImportConfig {
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Hashes what passes through: the uncompressed tar, for the diff_id.
struct Tee<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}

pub fn import_rootfs(
    store: &Store,
    source: &Path,
    name: &str,
    cfg: ImportConfig,
) -> Result<ImageRecord, StoreError> {
    let name = super::normalize_name(name)?;
    let meta = std::fs::metadata(source).map_err(io_err("read", source))?;
    let blob = store.begin_blob()?;
    let gz = GzEncoder::new(blob, flate2::Compression::fast());
    let mut tee = Tee {
        inner: gz,
        hasher: Sha256::new(),
    };
    let tmp_dir = store.root().join("tmp");
    if meta.is_dir() {
        let mut b = tar::Builder::new(&mut tee);
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        b.append_dir_all(".", source).map_err(io_err("archive", source))?;
        b.finish().map_err(io_err("archive", source))?;
    } else {
        let f = File::open(source).map_err(io_err("open", source))?;
        let mut reader: Box<dyn Read> = if is_gzip(source) {
            Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
        } else {
            Box::new(BufReader::new(f))
        };
        io::copy(&mut reader, &mut tee).map_err(io_err("read", source))?;
    }
    let diff_id = Digest::from_hasher(tee.hasher);
    let blob = tee.inner.finish().map_err(io_err("compress into", &tmp_dir))?;
    let layer_size = blob.offset();
    let layer = blob.commit(None)?;
    let now = vessel_clock_now();
    let mut env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
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
        "created": now, "architecture": "amd64", "os": "linux", "config": runtime,
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [{ "created": now, "created_by": format!("vessel image import {}", source.display()) }],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = store.put_blob_bytes(&config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len() },
        "layers": [{ "mediaType": LAYER_GZIP, "digest": layer.to_string(), "size": layer_size }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let manifest_digest = store.put_blob_bytes(&manifest_bytes)?;
    store.set_name(&name, &manifest_digest, OCI_MANIFEST, manifest_bytes.len() as u64)?;
    store.find(&name)
}

/// RFC 3339 now, UTC.
pub(super) fn vessel_clock_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
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
