//! Pushes to real docker-registry instances on loopback: a pulled image under a new name on another
//! registry (uploads; skopeo reads it back), across repositories of one registry (blobs mounted, not
//! uploaded), a blob larger than the chunk size (PATCH chunks), blobs the registry has (skipped).

mod registry_support;

use std::sync::OnceLock;

use registry_support::images::build_layout;
use registry_support::*;
use vessel_image::reference::Reference;
use vessel_image::registry::{pull, push, NoProgress, RegistryError, RegistryOptions};
use vessel_image::store::Store;

struct Fixture {
    /// Holds busybox:latest and big:v1 (pushed with skopeo).
    source: Registry,
    /// Another registry, so pushes to it upload every blob.
    target: Registry,
    /// Both images pulled from `source`.
    store: Store,
    _dirs: Vec<TempDir>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let source = Registry::start(RegistryConfig::default());
        let target = Registry::start(RegistryConfig::default());
        let layout = build_layout();
        skopeo_copy_in(
            layout.path(),
            "single",
            &format!("{}/busybox:latest", source.addr),
            false,
            None,
        );
        skopeo_copy_in(
            layout.path(),
            "big",
            &format!("{}/big:v1", source.addr),
            false,
            None,
        );
        let dir = TempDir::new("store");
        let store = Store::open(dir.path()).unwrap();
        for name in ["busybox:latest", "big:v1"] {
            pull(&store, &reference(&source.addr, name), &opts(), &NoProgress).unwrap();
        }
        Fixture {
            source,
            target,
            store,
            _dirs: vec![dir, layout.dir],
        }
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

fn local(f: &Fixture, name: &str) -> String {
    reference(&f.source.addr, name).to_string()
}

/// What skopeo reads back: the manifest digest, after copying every blob out (skopeo verifies them).
fn skopeo_digest(src: &str) -> String {
    let out = TempDir::new("skopeo-out");
    skopeo_copy_out(src, out.path(), None);
    images::digest(&skopeo_raw_manifest(src, None))
}

#[test]
fn push_under_a_new_name_to_another_registry() {
    let f = fixture();
    let record = f.store.find(&local(f, "busybox:latest")).unwrap();
    let remote = reference(&f.target.addr, "vessel/pushed:v2");
    let progress = Recorder::default();
    push(&f.store, &local(f, "busybox:latest"), &remote, &opts(), &progress).unwrap();
    assert_eq!(
        skopeo_digest(&format!("{}/vessel/pushed:v2", f.target.addr)),
        record.manifest.to_string()
    );
    let log = f.target.log();
    assert!(
        log.contains("PUT /v2/vessel/pushed/blobs/uploads/"),
        "no monolithic upload in the log"
    );
    let sizes: u64 = progress.advanced.lock().unwrap().values().sum();
    assert_eq!(
        sizes,
        progress
            .started
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s)
            .sum::<u64>()
    );

    // And our own pull reads it back into a fresh store.
    let dir = TempDir::new("store2");
    let fresh = Store::open(dir.path()).unwrap();
    let again = pull(&fresh, &remote, &opts(), &NoProgress).unwrap();
    assert_eq!(again.manifest, record.manifest);
    assert_eq!(fresh.config(&again).unwrap().rootfs().diff_ids().len(), 1);

    // A second push finds every blob there already.
    let progress = Recorder::default();
    push(&f.store, &local(f, "busybox:latest"), &remote, &opts(), &progress).unwrap();
    assert_eq!(
        progress.messages().matches("already in vessel/pushed").count(),
        2,
        "{}",
        progress.messages()
    );
}

#[test]
fn push_within_a_registry_mounts_blobs() {
    let f = fixture();
    let record = f.store.find(&local(f, "busybox:latest")).unwrap();
    let remote = reference(&f.source.addr, "mounted/copy:v1");
    let progress = Recorder::default();
    push(&f.store, &local(f, "busybox:latest"), &remote, &opts(), &progress).unwrap();
    assert_eq!(
        progress.messages().matches("mounted from busybox").count(),
        2,
        "{}",
        progress.messages()
    );
    let log = f.source.log();
    let mounts = log
        .lines()
        .filter(|l| l.contains("POST /v2/mounted/copy/blobs/uploads/?") && l.contains("mount="))
        .count();
    assert_eq!(mounts, 2, "two blobs mounted");
    assert!(
        !log.contains("PUT /v2/mounted/copy/blobs/uploads/"),
        "a blob was uploaded instead of mounted"
    );
    assert_eq!(
        skopeo_digest(&format!("{}/mounted/copy:v1", f.source.addr)),
        record.manifest.to_string()
    );
}

#[test]
fn push_large_blob_in_chunks() {
    let f = fixture();
    let record = f.store.find(&local(f, "big:v1")).unwrap();
    let remote = reference(&f.target.addr, "chunked:v1");
    push(
        &f.store,
        &local(f, "big:v1"),
        &remote,
        &RegistryOptions {
            parallel: 1,
            ..opts()
        },
        &NoProgress,
    )
    .unwrap();
    let log = f.target.log();
    assert!(
        log.matches("PATCH /v2/chunked/blobs/uploads/").count() >= 2,
        "no chunked upload"
    );
    assert_eq!(
        skopeo_digest(&format!("{}/chunked:v1", f.target.addr)),
        record.manifest.to_string()
    );
}

#[test]
fn push_of_unknown_image_or_to_a_dead_registry_fails() {
    let f = fixture();
    let remote = reference(&f.target.addr, "x:y");
    let err = push(&f.store, "no-such-image:latest", &remote, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, RegistryError::LocalImage { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-image"), "{err}");

    let dead = reference(&format!("127.0.0.1:{}", free_port()), "x:y");
    let err = push(&f.store, &local(f, "busybox:latest"), &dead, &opts(), &NoProgress).unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
}
