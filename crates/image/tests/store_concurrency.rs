//! Many writers at once, in threads and in processes, importing, tagging, removing and collecting garbage on
//! one store: the index stays valid, every name that should be there is, and every named image is complete
//! (garbage collection never takes a blob another writer has written but not yet named).

mod store_support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use store_support::*;
use vessel_image::store::{ImportConfig, Store};

/// A small tree; the same in every writer, so they all share (and race on) one layer blob.
fn small_rootfs(dir: &Path) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/motd"), "shared layer\n").unwrap();
    fs::write(dir.join("etc/big"), vec![7u8; 200_000]).unwrap();
}

/// One writer's work: imports (each with its own config), tags, and removals of every other import.
fn writer(store: &Store, rootfs: &Path, id: &str, rounds: usize) -> BTreeSet<String> {
    let mut expected = BTreeSet::new();
    for i in 0..rounds {
        let cfg = ImportConfig {
            env: vec![format!("WRITER={id}-{i}")],
            ..Default::default()
        };
        let img = store
            .import_rootfs(rootfs, &format!("w{id}/img:{i}"), cfg)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        store
            .tag(&img.name, &format!("w{id}/tag:{i}"))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        expected.insert(format!("docker.io/w{id}/tag:{i}"));
        if i % 2 == 1 {
            store.remove(&img.name).unwrap_or_else(|e| panic!("{id}: {e}"));
        } else {
            expected.insert(img.name.clone());
        }
    }
    expected
}

/// The index parses, names are unique, and every named image is whole and unpacks.
fn check_store(store: &Store, expected: &BTreeSet<String>) {
    let idx: Value = serde_json::from_slice(&fs::read(store.layout().join("index.json")).unwrap())
        .expect("index.json is JSON");
    let listed: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "a name twice in index.json: {listed:?}"
    );
    assert_eq!(&unique, expected);
    for image in store.list().unwrap() {
        let dirs = store.layer_dirs(&image).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            fs::read_to_string(dirs[0].join("etc/motd")).unwrap(),
            "shared layer\n"
        );
    }
    let tmp: Vec<String> = files(&store.root().join("tmp"))
        .into_iter()
        .filter(|f| !f.starts_with("pins-"))
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
}

/// Collect garbage in a loop until told to stop; returns how many collections ran.
fn collector(store: Store, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            store.prune().unwrap_or_else(|e| panic!("prune: {e}"));
            n += 1;
        }
        n
    })
}

#[test]
fn threads_import_tag_remove_and_prune_at_once() {
    let t = TempDir::new("threads");
    let rootfs = t.path("rootfs");
    small_rootfs(&rootfs);
    let root = t.path("store");
    let shared = Arc::new(Store::open(&root).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let gc = collector(Store::open(&root).unwrap(), stop.clone());
    let mut handles = Vec::new();
    for id in 0..6 {
        let (root, rootfs, shared) = (root.clone(), rootfs.clone(), shared.clone());
        handles.push(std::thread::spawn(move || {
            // Half the threads share one Store, the others open their own.
            if id % 2 == 0 {
                writer(&shared, &rootfs, &id.to_string(), 4)
            } else {
                writer(&Store::open(&root).unwrap(), &rootfs, &id.to_string(), 4)
            }
        }));
    }
    let mut expected = BTreeSet::new();
    for h in handles {
        expected.extend(h.join().expect("writer thread"));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(gc.join().unwrap() > 0);
    drop(shared);
    let store = Store::open(&root).unwrap();
    check_store(&store, &expected);
    assert_eq!(expected.len(), 6 * 6);
    // Every removed image's own config and manifest were collected: 24 images left share one layer.
    let report = store.prune().unwrap();
    assert_eq!(report.blobs_removed, 0, "{report:?}");
    assert_eq!(files(&store.layout().join("blobs/sha256")).len(), 24 * 2 + 1);
}

/// Not a test on its own: a writer process of `processes_import_tag_remove_and_prune_at_once`.
#[test]
#[ignore = "run as a writer process by processes_import_tag_remove_and_prune_at_once"]
fn writer_process() {
    let (Ok(root), Ok(id)) = (
        std::env::var("VESSEL_STORE_WRITER_ROOT"),
        std::env::var("VESSEL_STORE_WRITER_ID"),
    ) else {
        return;
    };
    let root = Path::new(&root);
    let store = Store::open(&root.join("store")).unwrap();
    let expected = writer(&store, &root.join("rootfs"), &id, 4);
    fs::write(
        root.join(format!("expected-{id}")),
        expected.into_iter().collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
}

#[test]
fn processes_import_tag_remove_and_prune_at_once() {
    let t = TempDir::new("procs");
    small_rootfs(&t.path("rootfs"));
    let root = t.path("store");
    let store = Store::open(&root).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let gc = collector(Store::open(&root).unwrap(), stop.clone());
    let children: Vec<_> = (0..4)
        .map(|id| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "writer_process", "--ignored", "--test-threads=1"])
                .env("VESSEL_STORE_WRITER_ROOT", &t.0)
                .env("VESSEL_STORE_WRITER_ID", format!("p{id}"))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(
            c.wait().unwrap().success(),
            "a writer process failed (its panic is above)"
        );
    }
    stop.store(true, Ordering::Relaxed);
    gc.join().unwrap();
    let mut expected = BTreeSet::new();
    for id in 0..4 {
        let text = fs::read_to_string(t.path(&format!("expected-p{id}"))).unwrap();
        expected.extend(text.lines().map(String::from));
    }
    assert_eq!(expected.len(), 4 * 6);
    check_store(&store, &expected);
    // skopeo reads the layout the writers left.
    let layout = store.layout().display().to_string();
    run(Command::new("skopeo").args(["inspect", "--raw", &format!("oci:{layout}:docker.io/wp0/tag:3")]));
}
