//! Docker v2 schema 2 images pulled from a real docker-registry on loopback are stored as OCI image manifests:
//! same blobs (gzip, plain and zstd tar layers, a foreign layer with its URL), new manifest in index.json
//! under the image's name; the layers unpack, real skopeo reads the image from the store's layout
//! (`skopeo inspect` / `skopeo copy oci:`), a Docker manifest list resolves to the platform's manifest, and
//! the converted image pushes back. Blobs and Docker manifests are written by hand with the registry API
//! (skopeo cannot write zstd, plain tar or foreign layers into a v2s2 manifest).

mod registry_support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use registry_support::images::{self, build_layout, Layout};
use registry_support::*;
use serde_json::{json, Value};
use vessel_image::reference::Reference;
use vessel_image::registry::{pull, push, NoProgress, RegistryOptions};
use vessel_image::store::{ImageRecord, Store};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
const DOCKER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const OCI_NONDISTRIBUTABLE: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/// The repository everything here lives in.
const REPO: &str = "dockerfmt";

/// A Docker manifest PUT into the registry.
struct DockerImage {
    bytes: Vec<u8>,
    digest: String,
    config: (String, u64),
    /// (Docker media type, digest, size), lowest first.
    layers: Vec<(String, String, u64)>,
    /// The OCI media types the layers must be stored with.
    oci_types: Vec<&'static str>,
}

struct Fixture {
    registry: Registry,
    _layout: Layout,
    /// dockerfmt:v2s2, linux/amd64: busybox (gzip), hello (zstd), motd (plain tar), a foreign layer (gzip).
    amd64: DockerImage,
    /// dockerfmt:arm, linux/arm64/v8: busybox (gzip), hello (zstd).
    arm64: DockerImage,
    /// Digest of dockerfmt:list, a Docker manifest list of both.
    list: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let registry = Registry::start(RegistryConfig::default());
        let layout = build_layout();
        // Every blob of the "multi" (amd64) and "arm" images, byte for byte (`skopeo copy` would compress the
        // plain tar layer).
        let addr = registry.addr.as_str();
        for tag in ["multi", "arm"] {
            let built = layout.image(tag);
            for blob in std::iter::once(&built.config).chain(&built.layers) {
                let bytes = fs::read(layout.path().join("blobs/sha256").join(&blob.digest[7..])).unwrap();
                assert_eq!(put_blob(addr, REPO, &bytes), blob.digest);
            }
        }

        let foreign_tar = images::tar_layer(&[("etc/foreign.txt", b"from a foreign layer\n", 0o644)], &[]);
        let foreign = images::compress(&foreign_tar, images::GZIP);
        let foreign_digest = put_blob(addr, REPO, &foreign);
        // The layer's URL is the registry's own blob URL, so skopeo (which follows it) can fetch it.
        let foreign_url = format!("http://{addr}/v2/{REPO}/blobs/{foreign_digest}");

        let multi = layout.image("multi");
        let mut config: Value = serde_json::from_slice(
            &fs::read(layout.path().join("blobs/sha256").join(&multi.config.digest[7..])).unwrap(),
        )
        .unwrap();
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(images::digest(&foreign_tar).into());
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = put_blob(addr, REPO, &config);

        let mut layers: Vec<(String, String, u64)> = multi
            .layers
            .iter()
            .zip([DOCKER_GZIP, DOCKER_ZSTD, DOCKER_TAR])
            .map(|(l, t)| (t.to_string(), l.digest.clone(), l.size))
            .collect();
        layers.push((DOCKER_FOREIGN.to_string(), foreign_digest, foreign.len() as u64));
        let amd64 = docker_image(
            addr,
            "v2s2",
            (config_digest, config.len() as u64),
            layers,
            Some(&foreign_url),
        );

        let arm = layout.image("arm");
        let layers = arm
            .layers
            .iter()
            .zip([DOCKER_GZIP, DOCKER_ZSTD])
            .map(|(l, t)| (t.to_string(), l.digest.clone(), l.size))
            .collect();
        let arm64 = docker_image(
            addr,
            "arm",
            (arm.config.digest.clone(), arm.config.size),
            layers,
            None,
        );

        let entry = |i: &DockerImage, platform: Value| {
            json!({"mediaType": DOCKER_MANIFEST, "digest": i.digest, "size": i.bytes.len(), "platform": platform})
        };
        let list = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                entry(&arm64, json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
                entry(&amd64, json!({"os": "linux", "architecture": "amd64"})),
            ],
        }))
        .unwrap();
        put_manifest(addr, REPO, "list", DOCKER_LIST, &list);
        Fixture {
            list: images::digest(&list),
            registry,
            _layout: layout,
            amd64,
            arm64,
        }
    })
}

/// PUTs a Docker v2 schema 2 manifest under `tag`; a foreign layer gets `foreign_url`.
fn docker_image(
    addr: &str,
    tag: &str,
    config: (String, u64),
    layers: Vec<(String, String, u64)>,
    foreign_url: Option<&str>,
) -> DockerImage {
    let descriptors: Vec<Value> = layers
        .iter()
        .map(|(t, d, s)| {
            let mut l = json!({"mediaType": t, "size": s, "digest": d});
            if t == DOCKER_FOREIGN {
                l["urls"] = json!([foreign_url.unwrap()]);
            }
            l
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.1, "digest": config.0},
        "layers": descriptors,
    });
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    put_manifest(addr, REPO, tag, DOCKER_MANIFEST, &bytes);
    let oci_types = layers
        .iter()
        .map(|(t, _, _)| match t.as_str() {
            DOCKER_GZIP => images::GZIP,
            DOCKER_ZSTD => images::ZSTD,
            DOCKER_TAR => images::TAR,
            _ => OCI_NONDISTRIBUTABLE,
        })
        .collect();
    DockerImage {
        digest: images::digest(&bytes),
        bytes,
        config,
        layers,
        oci_types,
    }
}

fn opts() -> RegistryOptions {
    RegistryOptions {
        insecure: true,
        ..RegistryOptions::default()
    }
}

fn reference(addr: &str, name: &str) -> Reference {
    Reference::parse(&format!("{addr}/{name}")).unwrap()
}

fn new_store(tag: &str) -> (Store, TempDir) {
    let dir = TempDir::new(tag);
    (Store::open(dir.path()).unwrap(), dir)
}

/// The stored manifest of `record` is the OCI form of `docker`: OCI media types, the same config and layer
/// digests and sizes, foreign URLs kept; index.json names it (once) with its new digest, type and size.
fn assert_stored_as_oci(store: &Store, record: &ImageRecord, docker: &DockerImage) {
    let bytes = fs::read(store.blob_path(&record.manifest)).unwrap();
    assert_eq!(images::digest(&bytes), record.manifest.to_string());
    assert_ne!(
        record.manifest.to_string(),
        docker.digest,
        "the manifest was converted"
    );
    assert!(
        !store.has_blob(&docker.digest.parse().unwrap()),
        "the Docker manifest is not kept"
    );
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["mediaType"], images::OCI_MANIFEST);
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["config"]["mediaType"], images::OCI_CONFIG);
    assert_eq!(m["config"]["digest"], docker.config.0.as_str());
    assert_eq!(m["config"]["size"], docker.config.1);
    assert_eq!(record.config.to_string(), docker.config.0);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), docker.layers.len());
    for ((layer, (docker_type, digest, size)), oci_type) in
        layers.iter().zip(&docker.layers).zip(&docker.oci_types)
    {
        assert_eq!(layer["mediaType"], *oci_type, "{docker_type}");
        assert_eq!(layer["digest"], digest.as_str());
        assert_eq!(layer["size"], *size);
        assert_eq!(layer["urls"].is_array(), docker_type == DOCKER_FOREIGN);
    }
    for digest in std::iter::once(&docker.config.0).chain(docker.layers.iter().map(|(_, d, _)| d)) {
        assert_eq!(&file_digest(&store.blob_path(&digest.parse().unwrap())), digest);
    }

    let index: Value = serde_json::from_slice(&fs::read(store.layout().join("index.json")).unwrap()).unwrap();
    let named: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["annotations"]["org.opencontainers.image.ref.name"] == record.name.as_str())
        .collect();
    assert_eq!(named.len(), 1, "{index}");
    assert_eq!(named[0]["digest"], record.manifest.to_string());
    assert_eq!(named[0]["mediaType"], images::OCI_MANIFEST);
    assert_eq!(named[0]["size"], bytes.len());
}

/// `skopeo inspect oci:<store layout>:<name>` sees the image: its digest and layers.
fn skopeo_inspect(store: &Store, record: &ImageRecord) -> Value {
    let source = format!("oci:{}:{}", store.layout().display(), record.name);
    let out = run(Command::new("skopeo").args(["--insecure-policy", "inspect", &source]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], record.manifest.to_string(), "{out}");
    v
}

/// `skopeo copy oci:<store layout>:<name> dir:<dest>`: skopeo reads and verifies every blob (a foreign layer
/// through its URL); the copy has our manifest, byte for byte.
fn skopeo_copy_to_dir(store: &Store, record: &ImageRecord, dest: &Path) {
    let source = format!("oci:{}:{}", store.layout().display(), record.name);
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", &source])
        .arg(format!("dir:{}", dest.display())));
    assert_eq!(
        fs::read(dest.join("manifest.json")).unwrap(),
        fs::read(store.blob_path(&record.manifest)).unwrap()
    );
}

#[test]
fn pull_docker_v2s2_stores_an_oci_manifest_that_unpacks_and_skopeo_reads() {
    require("skopeo");
    let f = fixture();
    let (store, _dir) = new_store("docker-v2s2");
    let progress = Recorder::default();
    let r = reference(&f.registry.addr, &format!("{REPO}:v2s2"));
    let record = pull(&store, &r, &opts(), &progress).unwrap();
    assert_eq!(record.name, r.to_string());
    assert_stored_as_oci(&store, &record, &f.amd64);
    assert!(
        progress.messages().contains(&format!(
            "Converted Docker manifest {} to OCI manifest {}",
            f.amd64.digest, record.manifest
        )),
        "{}",
        progress.messages()
    );
    assert_eq!(store.find(&r.to_string()).unwrap(), record);
    assert_eq!(store.manifest(&record).unwrap().layers().len(), 4);
    assert_eq!(store.config(&record).unwrap().rootfs().diff_ids().len(), 4);

    let dirs = store.layer_dirs(&record).unwrap();
    assert_eq!(dirs.len(), 4);
    assert_eq!(
        fs::read(dirs[0].join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        fs::read_to_string(dirs[1].join("etc/hello.txt")).unwrap(),
        "hello from a zstd layer\n"
    );
    assert_eq!(
        fs::read_to_string(dirs[2].join("etc/motd")).unwrap(),
        "plain tar layer\n"
    );
    assert_eq!(
        fs::read_to_string(dirs[3].join("etc/foreign.txt")).unwrap(),
        "from a foreign layer\n"
    );

    let inspect = skopeo_inspect(&store, &record);
    let layers: Vec<&str> = inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = f.amd64.layers.iter().map(|(_, d, _)| d.as_str()).collect();
    assert_eq!(layers, expected);
    let copy = TempDir::new("skopeo-dir");
    skopeo_copy_to_dir(&store, &record, copy.path());
    for digest in std::iter::once(f.amd64.config.0.as_str()).chain(expected.iter().copied()) {
        assert_eq!(file_digest(&copy.path().join(&digest[7..])), digest);
    }

    // Pulling again changes nothing; pulling by the Docker digest stores the same OCI manifest under that name.
    let again = pull(&store, &r, &opts(), &NoProgress).unwrap();
    assert_eq!(again, record);
    let by_digest = reference(&f.registry.addr, &format!("{REPO}@{}", f.amd64.digest));
    let pinned = pull(&store, &by_digest, &opts(), &NoProgress).unwrap();
    assert_eq!(pinned.manifest, record.manifest);
    assert_eq!(
        store.find(&by_digest.to_string()).unwrap().name,
        by_digest.to_string()
    );
    assert_stored_as_oci(&store, &pinned, &f.amd64);
}

#[test]
fn pull_docker_manifest_list_stores_the_platform_manifest_as_oci() {
    require("skopeo");
    let f = fixture();
    let (store, _dir) = new_store("docker-list");
    let direct = pull(
        &store,
        &reference(&f.registry.addr, &format!("{REPO}:v2s2")),
        &opts(),
        &NoProgress,
    )
    .unwrap();

    let r = reference(&f.registry.addr, &format!("{REPO}:list"));
    let amd64 = pull(&store, &r, &opts(), &NoProgress).unwrap();
    assert_eq!(
        amd64.manifest, direct.manifest,
        "the same Docker manifest converts to the same OCI manifest"
    );
    assert_stored_as_oci(&store, &amd64, &f.amd64);
    assert!(
        !store.has_blob(&f.list.parse().unwrap()),
        "the list is not stored"
    );
    skopeo_inspect(&store, &amd64);

    let (arm_store, _arm_dir) = new_store("docker-list-arm");
    let arm_opts = RegistryOptions {
        platform: ("linux".to_string(), "arm64/v8".to_string()),
        ..opts()
    };
    let arm = pull(&arm_store, &r, &arm_opts, &NoProgress).unwrap();
    assert_stored_as_oci(&arm_store, &arm, &f.arm64);
    let dirs = arm_store.layer_dirs(&arm).unwrap();
    assert_eq!(
        fs::read_to_string(dirs[1].join("etc/hello.txt")).unwrap(),
        "hello from a zstd layer\n"
    );
    let inspect = skopeo_inspect(&arm_store, &arm);
    assert_eq!(inspect["Architecture"], "arm64");
    let copy = TempDir::new("skopeo-dir-arm");
    skopeo_copy_to_dir(&arm_store, &arm, copy.path());
}

#[test]
fn converted_image_pushes_as_oci_and_pulls_back_unchanged() {
    require("skopeo");
    let f = fixture();
    let (store, _dir) = new_store("docker-push");
    let record = pull(
        &store,
        &reference(&f.registry.addr, &format!("{REPO}:v2s2")),
        &opts(),
        &NoProgress,
    )
    .unwrap();
    let remote = reference(&f.registry.addr, &format!("{REPO}:pushed"));
    push(&store, &record.name, &remote, &opts(), &NoProgress).unwrap();
    let stored = fs::read(store.blob_path(&record.manifest)).unwrap();
    assert_eq!(skopeo_raw_manifest(&remote.to_string(), None), stored);

    let (other, _other_dir) = new_store("docker-push-back");
    let back = pull(&other, &remote, &opts(), &NoProgress).unwrap();
    assert_eq!(
        back.manifest, record.manifest,
        "an OCI manifest is stored as the registry sent it"
    );
    let copy = TempDir::new("skopeo-dir-pushed");
    skopeo_copy_out(&remote.to_string(), copy.path(), None);
    assert_eq!(fs::read(copy.path().join("manifest.json")).unwrap(), stored);
}
