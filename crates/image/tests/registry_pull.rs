//! Pulls from a real docker-registry on loopback (populated with skopeo from OCI layouts built here): single
//! and multi-layer images (gzip, zstd, plain tar) and an OCI index, by tag and by digest; and every way a pull
//! can fail, each leaving the store as it was. Docker v2 schema 2 images: registry_docker.rs.

mod registry_support;

use std::sync::OnceLock;

use registry_support::images::{build_layout, Layout};
use registry_support::net::{Fault, FaultProxy};
use registry_support::*;
use vessel_image::reference::Reference;
use vessel_image::registry::{pull, NoProgress, RegistryError, RegistryOptions};
use vessel_image::store::Store;

struct Fixture {
    registry: Registry,
    layout: Layout,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let registry = Registry::start(RegistryConfig::default());
        let layout = build_layout();
        for (tag, dest, all) in [
            ("single", "busybox:latest", false),
            ("multi", "multi:v1", false),
            ("index", "multiarch:v1", true),
        ] {
            skopeo_copy_in(
                layout.path(),
                tag,
                &format!("{}/{dest}", registry.addr),
                all,
                None,
            );
        }
        Fixture { registry, layout }
    })
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

struct TestStore {
    store: Store,
    _dir: TempDir,
}

fn new_store() -> TestStore {
    let dir = TempDir::new("store");
    TestStore {
        store: Store::open(dir.path()).unwrap(),
        _dir: dir,
    }
}

fn names(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    names.sort();
    names
}

#[test]
fn pull_single_layer_image_agrees_with_the_registry() {
    let f = fixture();
    let s = new_store();
    let built = f.layout.image("single");
    let progress = Recorder::default();
    let r = reference(&f.registry.addr, "busybox:latest");
    let record = pull(&s.store, &r, &opts(), &progress).unwrap();

    assert_eq!(record.manifest.to_string(), built.digest);
    assert_eq!(record.config.to_string(), built.config.digest);
    let found = s.store.find(&r.to_string()).unwrap();
    assert_eq!(found.manifest, record.manifest);
    let raw = skopeo_raw_manifest(&format!("{}/busybox:latest", f.registry.addr), None);
    assert_eq!(
        registry_support::images::digest(&raw),
        record.manifest.to_string(),
        "skopeo sees another manifest"
    );

    let manifest = s.store.manifest(&record).unwrap();
    let layers: Vec<String> = manifest.layers().iter().map(|l| l.digest().to_string()).collect();
    assert_eq!(
        layers,
        built.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()
    );
    let config = s.store.config(&record).unwrap();
    assert_eq!(config.architecture().to_string(), "amd64");
    assert_eq!(config.rootfs().diff_ids().len(), 1);
    for blob in built.layers.iter().chain([&built.config]) {
        let path = s.store.blob_path(&blob.digest.parse().unwrap());
        assert_eq!(file_digest(&path), blob.digest);
    }

    // Progress: every blob started with its size, advanced by exactly that, and finished.
    let started = progress.started.lock().unwrap().clone();
    assert_eq!(started.len(), 2);
    for (digest, size) in started {
        assert_eq!(
            progress
                .advanced
                .lock()
                .unwrap()
                .get(&digest)
                .copied()
                .unwrap_or(0),
            size,
            "{digest}"
        );
        assert!(progress.done.lock().unwrap().contains(&digest));
    }
}

#[test]
fn pull_multi_layer_gzip_zstd_and_tar_in_parallel_then_again_without_downloads() {
    let f = fixture();
    let s = new_store();
    // skopeo compresses the plain tar layer on its way in: the registry's manifest is the reference.
    let raw = skopeo_raw_manifest(&format!("{}/multi:v1", f.registry.addr), None);
    let expected: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let proxy = FaultProxy::start(&f.registry.addr, Fault::None);
    let r = reference(&proxy.addr, "multi:v1");
    let opts = RegistryOptions {
        parallel: 4,
        ..opts()
    };
    let record = pull(&s.store, &r, &opts, &NoProgress).unwrap();
    assert_eq!(
        record.manifest.to_string(),
        registry_support::images::digest(&raw)
    );
    let layers = expected["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let types: Vec<&str> = layers.iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert!(
        types.iter().any(|t| t.ends_with("+zstd")) && types.iter().any(|t| t.ends_with("+gzip")),
        "{types:?}"
    );
    for layer in layers {
        let digest = layer["digest"].as_str().unwrap();
        assert_eq!(file_digest(&s.store.blob_path(&digest.parse().unwrap())), digest);
    }
    // The pulled layers unpack (gzip, zstd, and the tar skopeo gzipped).
    let dirs = s.store.layer_dirs(&record).unwrap();
    assert_eq!(dirs.len(), 3);
    assert!(dirs[0].join("bin/busybox").is_file() && dirs[0].join("bin/sh").is_symlink());
    assert_eq!(
        std::fs::read_to_string(dirs[1].join("etc/hello.txt")).unwrap(),
        "hello from a zstd layer\n"
    );
    assert!(dirs[2].join("etc/motd").is_file());
    let blob_gets = |p: &FaultProxy| {
        p.requests()
            .iter()
            .filter(|r| r.starts_with("GET") && r.contains("/blobs/"))
            .count()
    };
    assert_eq!(blob_gets(&proxy), 4);

    // Pulling again fetches the manifest but no blob.
    pull(&s.store, &r, &opts, &NoProgress).unwrap();
    assert_eq!(blob_gets(&proxy), 4);
    assert_eq!(names(&s.store), vec![r.to_string()]);
}

#[test]
fn pull_index_picks_the_platform() {
    let f = fixture();
    let s = new_store();
    let r = reference(&f.registry.addr, "multiarch:v1");
    let amd64 = pull(&s.store, &r, &opts(), &NoProgress).unwrap();
    let raw = skopeo_raw_manifest(&format!("{}/multi:v1", f.registry.addr), None);
    assert_eq!(amd64.manifest.to_string(), registry_support::images::digest(&raw));

    let arm = RegistryOptions {
        platform: ("linux".into(), "arm64".into()),
        ..opts()
    };
    let record = pull(&s.store, &r, &arm, &NoProgress).unwrap();
    assert_eq!(record.manifest.to_string(), f.layout.image("arm").digest);
    assert_eq!(
        s.store.config(&record).unwrap().architecture().to_string(),
        "arm64"
    );

    let before = names(&s.store);
    let s390x = RegistryOptions {
        platform: ("linux".into(), "s390x".into()),
        ..opts()
    };
    let err = pull(&s.store, &r, &s390x, &NoProgress).unwrap_err();
    assert!(matches!(err, RegistryError::NoPlatform { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("linux/s390x") && text.contains("linux/arm64/v8") && text.contains(&r.to_string()),
        "{text}"
    );
    assert_eq!(names(&s.store), before);
}

#[test]
fn pull_by_digest() {
    let f = fixture();
    let s = new_store();
    let built = f.layout.image("single");
    let r = reference(&f.registry.addr, &format!("busybox@{}", built.digest));
    let record = pull(&s.store, &r, &opts(), &NoProgress).unwrap();
    assert_eq!(record.manifest.to_string(), built.digest);
    assert_eq!(record.name, r.to_string());
    // Docker v2 schema 2 manifests and manifest lists: registry_docker.rs.
}

#[test]
fn unknown_tag_and_unknown_repository_are_errors() {
    let f = fixture();
    let s = new_store();
    let r = reference(&f.registry.addr, "busybox:nope");
    let err = pull(&s.store, &r, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, RegistryError::ManifestUnknown { .. }), "{err:?}");
    assert!(
        err.to_string().contains("nope") && err.to_string().contains(&r.to_string()),
        "{err}"
    );

    let wrong = format!("busybox@sha256:{}", "0".repeat(64));
    let err = pull(
        &s.store,
        &reference(&f.registry.addr, &wrong),
        &opts(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, RegistryError::ManifestUnknown { .. }), "{err:?}");

    let err = pull(
        &s.store,
        &reference(&f.registry.addr, "no/such/image:latest"),
        &opts(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::NameUnknown { .. } | RegistryError::ManifestUnknown { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no/such/image"), "{err}");
    assert!(names(&s.store).is_empty());
}

#[test]
fn registry_down_is_an_error() {
    let s = new_store();
    let addr = format!("127.0.0.1:{}", free_port());
    let r = reference(&addr, "busybox:latest");
    let err = pull(&s.store, &r, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("connection refused") && text.contains(&addr),
        "{text}"
    );
    assert!(names(&s.store).is_empty());
}

#[test]
fn garbage_manifests_are_errors() {
    let f = fixture();
    let s = new_store();
    for fault in [Fault::HtmlManifest, Fault::BadJsonManifest] {
        let proxy = FaultProxy::start(&f.registry.addr, fault);
        let err = pull(
            &s.store,
            &reference(&proxy.addr, "busybox:latest"),
            &opts(),
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, RegistryError::BadResponse { .. }), "{err:?}");
        let text = err.to_string();
        match fault {
            Fault::HtmlManifest => assert!(text.contains("wrong content type text/html"), "{text}"),
            _ => assert!(text.contains("not valid JSON"), "{text}"),
        }
    }
    assert!(names(&s.store).is_empty());
}

#[test]
fn corrupted_layer_is_rejected_and_leaves_nothing() {
    let f = fixture();
    let s = new_store();
    let built = f.layout.image("single");
    let proxy = FaultProxy::start(&f.registry.addr, Fault::Corrupt);
    let err = pull(
        &s.store,
        &reference(&proxy.addr, "busybox:latest"),
        &opts(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&built.layers[0].digest), "{err}");
    assert!(names(&s.store).is_empty());
    assert!(!s.store.has_blob(&built.layers[0].digest.parse().unwrap()));

    // The bad bytes were not kept: a clean pull succeeds.
    let record = pull(
        &s.store,
        &reference(&f.registry.addr, "busybox:latest"),
        &opts(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(record.manifest.to_string(), built.digest);
}

#[test]
fn cut_download_resumes_with_a_range_request() {
    let f = fixture();
    let s = new_store();
    let proxy = FaultProxy::start(
        &f.registry.addr,
        Fault::Cut {
            after: 100_000,
            times: 1,
        },
    );
    let progress = Recorder::default();
    let record = pull(
        &s.store,
        &reference(&proxy.addr, "busybox:latest"),
        &opts(),
        &progress,
    )
    .unwrap();
    assert_eq!(record.manifest.to_string(), f.layout.image("single").digest);
    let requests = proxy.requests();
    assert!(
        requests.iter().any(|r| r.contains("range=bytes=100000-")),
        "{requests:#?}"
    );
    assert!(
        progress.messages().contains("retrying from byte 100000"),
        "{}",
        progress.messages()
    );
}

#[test]
fn failed_download_resumes_in_the_next_pull() {
    let f = fixture();
    let s = new_store();
    let layer = &f.layout.image("single").layers[0];
    let cutting = FaultProxy::start(
        &f.registry.addr,
        Fault::Cut {
            after: 100_000,
            times: 1000,
        },
    );
    let err = pull(
        &s.store,
        &reference(&cutting.addr, "busybox:latest"),
        &opts(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, RegistryError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains(&layer.digest), "{err}");
    assert!(names(&s.store).is_empty());

    let clean = FaultProxy::start(&f.registry.addr, Fault::None);
    let progress = Recorder::default();
    let record = pull(
        &s.store,
        &reference(&clean.addr, "busybox:latest"),
        &opts(),
        &progress,
    )
    .unwrap();
    assert_eq!(record.manifest.to_string(), f.layout.image("single").digest);
    let ranged: Vec<String> = clean
        .requests()
        .into_iter()
        .filter(|r| !r.ends_with("range=-"))
        .collect();
    assert_eq!(ranged.len(), 1, "{:#?}", clean.requests());
    let offset: u64 = ranged[0]
        .split("bytes=")
        .nth(1)
        .unwrap()
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(offset >= 100_000 && offset < layer.size, "{ranged:?}");
    assert!(
        progress.messages().contains("resuming at byte"),
        "{}",
        progress.messages()
    );
}

#[test]
fn full_disk_leaves_the_store_unchanged() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a tmpfs: run it as root"
    );
    let f = fixture();
    let dir = TempDir::new("tiny");
    let tiny = dir.path().join("store");
    std::fs::create_dir_all(&tiny).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &tiny,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=600k"),
    )
    .expect("mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(tiny.clone());
    let store = Store::open(&tiny).unwrap();
    let err = pull(
        &store,
        &reference(&f.registry.addr, "busybox:latest"),
        &opts(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, RegistryError::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().contains("busybox:latest"), "{err}");
    assert!(names(&store).is_empty());
}

#[test]
fn wrong_image_name_is_an_error() {
    let f = fixture();
    let s = new_store();
    // Reference::parse refuses such names; one built by hand is refused before anything is sent.
    let r = Reference {
        registry: f.registry.addr.clone(),
        repository: "Bad_Name/..".to_string(),
        tag: Some("latest".to_string()),
        digest: None,
    };
    let err = pull(&s.store, &r, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, RegistryError::NameInvalid { .. }), "{err:?}");
    assert!(err.to_string().contains("Bad_Name"), "{err}");
    assert!(Reference::parse(&format!("{}/Bad_Name/..:latest", f.registry.addr)).is_err());
    assert!(names(&s.store).is_empty());
}

#[test]
fn plain_http_registry_needs_insecure() {
    let f = fixture();
    let s = new_store();
    let r = reference(&f.registry.addr, "busybox:latest");
    let err = pull(&s.store, &r, &RegistryOptions::default(), &NoProgress).unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("insecure"), "{err}");
    assert!(names(&s.store).is_empty());
}
