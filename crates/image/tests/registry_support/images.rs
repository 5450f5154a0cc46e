//! Test images, built here as an OCI image layout (what `skopeo copy oci:` reads): busybox-static layers in
//! gzip, zstd and plain tar, a large layer for chunked uploads, and an index for two platforms.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::TempDir;

pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// One manifest in the layout.
#[derive(Clone, Debug)]
pub struct Built {
    pub digest: String,
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

pub struct Layout {
    pub dir: TempDir,
    /// By tag: "single" (busybox, gzip), "multi" (busybox gzip + zstd + plain tar), "big" (one layer over the
    /// 8 MiB chunk size), "arm" (like single, for linux/arm64/v8), "index" (multi for amd64, arm for arm64).
    pub images: HashMap<String, Built>,
}

impl Layout {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn image(&self, tag: &str) -> &Built {
        &self.images[tag]
    }
}

/// A tar header owned by root, with a fixed mtime.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

pub fn tar_layer(entries: &[(&str, &[u8], u32)], symlinks: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, _, _) in entries
        .iter()
        .copied()
        .chain(symlinks.iter().map(|(p, _)| (*p, &b""[..], 0)))
    {
        if let Some((dir, _)) = path.rsplit_once('/') {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_string());
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                builder.append_data(&mut h, format!("{dir}/"), &b""[..]).unwrap();
            }
        }
    }
    for (path, data, mode) in entries {
        let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
        builder.append_data(&mut h, path, *data).unwrap();
    }
    for (path, target) in symlinks {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        builder.append_link(&mut h, path, target).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn compress(tar: &[u8], media_type: &str) -> Vec<u8> {
    match media_type {
        GZIP => {
            let level = if tar.len() > 4 << 20 {
                flate2::Compression::none()
            } else {
                flate2::Compression::fast()
            };
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
            enc.write_all(tar).unwrap();
            enc.finish().unwrap()
        }
        ZSTD => zstd::stream::encode_all(tar, 1).unwrap(),
        _ => tar.to_vec(),
    }
}

struct Writer<'a> {
    blobs: &'a Path,
}

impl Writer<'_> {
    fn put(&self, bytes: &[u8], media_type: &str) -> Blob {
        let digest = digest(bytes);
        fs::write(self.blobs.join(&digest[7..]), bytes).unwrap();
        Blob {
            digest,
            size: bytes.len() as u64,
            media_type: media_type.to_string(),
        }
    }

    /// A layer blob and its diff id.
    fn layer(&self, tar: &[u8], media_type: &str) -> (Blob, String) {
        (self.put(&compress(tar, media_type), media_type), digest(tar))
    }

    fn image(&self, arch: &str, variant: Option<&str>, layers: &[&(Blob, String)]) -> Built {
        let diff_ids: Vec<&str> = layers.iter().map(|(_, d)| d.as_str()).collect();
        let mut config = serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(v) = variant {
            config["variant"] = v.into();
        }
        let config = self.put(&serde_json::to_vec(&config).unwrap(), OCI_CONFIG);
        let descriptor =
            |b: &Blob| serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size});
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(&config),
            "layers": layers.iter().map(|(b, _)| descriptor(b)).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let blob = self.put(&bytes, OCI_MANIFEST);
        Built {
            digest: blob.digest,
            bytes,
            media_type: OCI_MANIFEST.to_string(),
            config,
            layers: layers.iter().map(|(b, _)| b.clone()).collect(),
        }
    }
}

/// Pseudo-random bytes (xorshift): incompressible, reproducible.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn build_layout() -> Layout {
    let dir = TempDir::new("layout");
    let blobs = dir.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let w = Writer { blobs: &blobs };

    let busybox = fs::read("/bin/busybox")
        .expect("/bin/busybox (Debian busybox-static) is needed: run scripts/test-deps.sh");
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let base = w.layer(
        &tar_layer(
            &[("bin/busybox", &busybox, 0o755), ("etc/passwd", passwd, 0o644)],
            &[("bin/sh", "busybox")],
        ),
        GZIP,
    );
    let hello = w.layer(
        &tar_layer(&[("etc/hello.txt", b"hello from a zstd layer\n", 0o644)], &[]),
        ZSTD,
    );
    let motd = w.layer(&tar_layer(&[("etc/motd", b"plain tar layer\n", 0o644)], &[]), TAR);
    let big = w.layer(
        &tar_layer(
            &[("big.bin", &noise((8 << 20) + (300 << 10), 0x9e37_79b9), 0o644)],
            &[],
        ),
        GZIP,
    );

    let mut images = HashMap::new();
    images.insert("single".to_string(), w.image("amd64", None, &[&base]));
    images.insert(
        "multi".to_string(),
        w.image("amd64", None, &[&base, &hello, &motd]),
    );
    images.insert("big".to_string(), w.image("amd64", None, &[&big]));
    images.insert("arm".to_string(), w.image("arm64", Some("v8"), &[&base, &hello]));

    let entry = |b: &Built, platform: Option<serde_json::Value>| {
        let mut d = serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.bytes.len()});
        if let Some(p) = platform {
            d["platform"] = p;
        }
        d
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            entry(&images["multi"], Some(serde_json::json!({"os": "linux", "architecture": "amd64"}))),
            entry(&images["arm"], Some(serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"}))),
        ],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_blob = w.put(&index_bytes, OCI_INDEX);
    let multi = images["multi"].clone();
    images.insert(
        "index".to_string(),
        Built {
            digest: index_blob.digest.clone(),
            bytes: index_bytes,
            media_type: OCI_INDEX.to_string(),
            ..multi
        },
    );

    let mut refs = Vec::new();
    let mut tags: Vec<&String> = images.keys().collect();
    tags.sort();
    for tag in tags {
        let b = &images[tag];
        let mut d = serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.bytes.len()});
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        refs.push(d);
    }
    fs::write(
        dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": refs})).unwrap(),
    )
    .unwrap();
    Layout { dir, images }
}
