//! The image store on a real filesystem, with skopeo and podman reading and writing what it holds.
//! Runs as root (podman); every store lives in a temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;

use vessel_image::store::{ImportConfig, Store};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("vessel-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn busybox_rootfs(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
    let st = Command::new(script)
        .arg(dir)
        .status()
        .expect("scripts/busybox-rootfs runs");
    assert!(
        st.success(),
        "scripts/busybox-rootfs failed (is busybox-static installed?)"
    );
}

fn names(store: &Store) -> Vec<String> {
    store.list().unwrap().into_iter().map(|i| i.name).collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn imported(t: &TempDir) -> Store {
    let rootfs = t.0.join("rootfs");
    busybox_rootfs(&rootfs);
    let store = Store::open(&t.0.join("store")).unwrap();
    let cfg = ImportConfig {
        cmd: vec!["sh".into()],
        env: vec!["A=1".into()],
        ..Default::default()
    };
    store.import_rootfs(&rootfs, "test/busybox:1", cfg).unwrap();
    store
}

#[test]
fn import_list_find_tag_remove_and_gc() {
    let t = TempDir::new("basic");
    let store = imported(&t);
    assert_eq!(names(&store), vec!["docker.io/test/busybox:1"]);
    let image = store.find("test/busybox:1").unwrap();
    assert_eq!(
        store.find(&image.config.hex()[..10]).unwrap().name,
        image.name,
        "found by id prefix"
    );
    let config = store.config(&image).unwrap();
    let rc = config.config().clone().unwrap();
    assert_eq!(rc.cmd().clone().unwrap(), vec!["sh"]);
    assert!(rc.env().clone().unwrap().contains(&"A=1".to_string()));
    let dirs = store.layer_dirs(&image).unwrap();
    assert!(dirs[0].join("bin/busybox").is_file(), "layer unpacked");
    store.tag("test/busybox:1", "other:2").unwrap();
    assert_eq!(names(&store).len(), 2);
    store.remove("test/busybox:1").unwrap();
    assert_eq!(names(&store), vec!["docker.io/library/other:2"]);
    assert!(store.has_blob(&image.config), "still used by the other name");
    store.remove("other:2").unwrap();
    assert!(names(&store).is_empty());
    assert!(!store.has_blob(&image.config), "blob collected");
    assert!(!dirs[0].exists(), "unpacked layer collected");
    assert!(store.find("other:2").is_err());
}

#[test]
fn a_held_image_outlives_its_names_until_released() {
    let t = TempDir::new("hold");
    let store = imported(&t);
    let image = store.find("test/busybox:1").unwrap();
    let dirs = store.layer_dirs(&image).unwrap();
    store.hold("instance-1", &image).unwrap();
    store.remove("test/busybox:1").unwrap();
    store.prune().unwrap();
    assert!(names(&store).is_empty(), "a hold is not a name");
    let held = store.held("instance-1").unwrap();
    assert_eq!(held.config, image.config);
    assert!(dirs[0].join("bin/busybox").is_file(), "held layers kept");
    assert_eq!(store.holders().unwrap(), vec!["instance-1"]);
    store.release("instance-1").unwrap();
    assert!(store.held("instance-1").is_err());
    assert!(!store.has_blob(&image.config), "released image collected");
    assert!(!dirs[0].exists(), "released layers collected");
    // skopeo still reads a layout with a hold in it.
    let t2 = TempDir::new("hold2");
    let store = imported(&t2);
    let image = store.find("test/busybox:1").unwrap();
    store.hold("instance-2", &image).unwrap();
    run(Command::new("skopeo").args([
        "inspect",
        &format!("oci:{}:docker.io/test/busybox:1", store.layout().display()),
    ]));
}

#[test]
fn bad_digests_and_archives_leave_the_store_unchanged() {
    let t = TempDir::new("bad");
    let store = imported(&t);
    let before = names(&store);
    let mut w = store.begin_blob().unwrap();
    std::io::Write::write_all(&mut w, b"hello").unwrap();
    let wrong = vessel_image::store::Digest::of(b"other");
    assert!(w.commit(Some(&wrong)).is_err());
    assert!(!store.has_blob(&wrong));
    let garbage = t.0.join("garbage.tar");
    std::fs::write(&garbage, b"this is not a tar archive at all").unwrap();
    assert!(store.load(&garbage).is_err());
    // A real archive cut in half.
    let good = t.0.join("good.tar");
    store.save(&["test/busybox:1"], &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = t.0.join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(store.load(&cut).is_err());
    assert_eq!(names(&store), before);
    assert!(store.find("no/such:image").is_err());
}

#[test]
fn skopeo_reads_and_writes_the_layout() {
    let t = TempDir::new("skopeo");
    let store = imported(&t);
    let layout = store.layout().display().to_string();
    let copy = t.0.join("copy");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{layout}:docker.io/test/busybox:1"),
        &format!("oci:{}:x", copy.display()),
    ]));
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:x", copy.display()),
        &format!("oci:{layout}:docker.io/test/copied:2"),
    ]));
    let copied = store
        .find("test/copied:2")
        .expect("skopeo's write is in our index");
    assert!(store.layer_dirs(&copied).unwrap()[0].join("bin/busybox").exists());
}

#[test]
fn podman_loads_what_we_save_and_we_load_what_it_saves() {
    let t = TempDir::new("podman");
    let store = imported(&t);
    let archive = t.0.join("saved.tar");
    store.save(&["test/busybox:1"], &archive).unwrap();
    let p = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.args([
            "--root",
            &t.0.join("podman").display().to_string(),
            "--runroot",
            &t.0.join("podman-run").display().to_string(),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
        c.args(args);
        c
    };
    let out = run(&mut p(&["load", "-i", &archive.display().to_string()]));
    assert!(out.contains("test/busybox:1"), "podman load: {out}");
    for (format, file) in [("docker-archive", "p-docker.tar"), ("oci-archive", "p-oci.tar")] {
        let f = t.0.join(file);
        run(&mut p(&[
            "save",
            "--format",
            format,
            "-o",
            &f.display().to_string(),
            "docker.io/test/busybox:1",
        ]));
        let loaded = store
            .load(&f)
            .unwrap_or_else(|e| panic!("load of podman's {format}: {e}"));
        assert!(!loaded.is_empty());
        let dirs = store.layer_dirs(&loaded[0]).unwrap();
        assert!(dirs.last().unwrap().join("bin/busybox").exists(), "{format}");
    }
    let _ = run(&mut p(&["system", "reset", "-f"]));
}
