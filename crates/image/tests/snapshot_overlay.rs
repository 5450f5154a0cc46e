//! Overlay snapshots on the host (root only): one layer, 40 layers (beyond the page-size limit on absolute
//! lowerdir paths: relative form), 200 layers (descriptor form), no layer, whiteouts from unpacked layers,
//! and removal.

mod unpack_util;

use std::fs;
use std::path::{Path, PathBuf};

use unpack_util::{require_root, Layer, Scratch};
use vessel_image::snapshot::{mount_snapshot, Snapshot, SnapshotError};
use vessel_image::unpack::{apply_layer_flat, unpack_layer};

/// The `lowerdir=` option of the mount at `mountpoint`, from /proc/self/mountinfo.
fn lowerdir_option(mountpoint: &Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mountpoint.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} is not mounted", mountpoint.display()));
    let opts = line.split(" - ").nth(1).unwrap().split(' ').nth(2).unwrap();
    opts.split(',')
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap()
        .to_string()
}

/// `n` layer dirs named like diff ids under `<dir>/layers`; layer i has `layer` = i and `only-i`.
fn make_layers(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join("layers").join(format!("sha256:{i:064x}"));
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("layer"), i.to_string()).unwrap();
            fs::write(p.join(format!("only-{i}")), b"").unwrap();
            p
        })
        .collect()
}

fn check_layers(snap: &Snapshot, n: usize) {
    assert_eq!(
        fs::read_to_string(snap.rootfs.join("layer")).unwrap(),
        (n - 1).to_string(),
        "top layer wins"
    );
    for i in 0..n {
        assert!(snap.rootfs.join(format!("only-{i}")).exists(), "only-{i} missing");
    }
}

fn remove_and_check(snap: Snapshot, instance: &Path) {
    let rootfs = snap.rootfs.clone();
    snap.remove().unwrap();
    assert!(!rootfs.exists() && !instance.join("upper").exists() && !instance.join("work").exists());
    assert!(!fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(rootfs.to_str().unwrap()));
}

#[test]
fn one_layer_read_write_and_remove() {
    require_root();
    let s = Scratch::new("snap1");
    let layers = make_layers(&s.target, 1);
    let instance = s.target.join("instance");
    let snap = mount_snapshot(&layers, &instance).unwrap();
    assert_eq!(snap.rootfs, fs::canonicalize(&instance).unwrap().join("rootfs"));
    assert!(snap.is_mounted());
    assert!(
        lowerdir_option(&snap.rootfs).starts_with('/'),
        "one layer: absolute paths"
    );
    check_layers(&snap, 1);
    fs::write(snap.rootfs.join("written"), b"w").unwrap();
    fs::remove_file(snap.rootfs.join("only-0")).unwrap();
    assert_eq!(fs::read(snap.upper().join("written")).unwrap(), b"w");
    assert!(
        layers[0].join("only-0").exists(),
        "the lower layer is never written"
    );
    // Mounting again over a mounted snapshot is refused.
    assert!(matches!(
        mount_snapshot(&layers, &instance),
        Err(SnapshotError::AlreadyMounted { .. })
    ));
    remove_and_check(snap, &instance);
    // Removing again (e.g. after a restart) is fine.
    Snapshot::at(&instance).remove().unwrap();
    s.assert_outside_untouched();
}

#[test]
fn forty_layers_use_relative_paths() {
    require_root();
    let s = Scratch::new("snap40");
    // A long store path, so that 40 absolute lower dirs exceed a page.
    let store = s
        .target
        .join("a-rather-long-store-directory-name-to-make-paths-long/var-lib-vessel");
    let layers = make_layers(&store, 40);
    let absolute: usize = layers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(
        absolute > 4096,
        "the test needs absolute lowerdirs beyond a page ({absolute})"
    );
    let instance = s.target.join("instance");
    let cwd = std::env::current_dir().unwrap();
    let snap = mount_snapshot(&layers, &instance).unwrap();
    let lower = lowerdir_option(&snap.rootfs);
    assert!(
        lower.starts_with("sha256"),
        "relative lowerdir expected, got {lower:.80}"
    );
    check_layers(&snap, 40);
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "the process's working directory must not change"
    );
    remove_and_check(snap, &instance);
}

#[test]
fn two_hundred_layers_use_descriptors() {
    require_root();
    let s = Scratch::new("snap200");
    let layers = make_layers(&s.target, 200);
    let cwd = std::env::current_dir().unwrap();
    let instance = s.target.join("instance");
    let snap = mount_snapshot(&layers, &instance).unwrap();
    let lower = lowerdir_option(&snap.rootfs);
    assert!(
        lower.split(':').all(|n| n.parse::<u32>().is_ok()),
        "descriptor lowerdir expected, got {lower:.80}"
    );
    check_layers(&snap, 200);
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "the process's working directory must not change"
    );
    remove_and_check(snap, &instance);
}

#[test]
fn no_layers_and_bad_layers() {
    require_root();
    let s = Scratch::new("snap0");
    let instance = s.target.join("instance");
    let snap = mount_snapshot(&[], &instance).unwrap();
    fs::write(snap.rootfs.join("x"), b"x").unwrap();
    remove_and_check(snap, &instance);
    assert!(!instance.join("empty-lower").exists());
    let e = mount_snapshot(&[s.target.join("missing")], &instance).unwrap_err();
    assert!(matches!(e, SnapshotError::Lower { .. }), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn overlay_of_unpacked_layers_matches_flat_application() {
    require_root();
    let s = Scratch::new("snapwh");
    let mut l1 = Layer::new();
    l1.dir("etc/").file("etc/passwd", b"p").file("etc/group", b"g");
    l1.dir("var/")
        .dir("var/cache/")
        .file("var/cache/x", b"x")
        .file("var/keep", b"k")
        .symlink("var/link", "keep");
    let mut l2 = Layer::new();
    l2.file("etc/.wh.passwd", b"")
        .dir("var/")
        .file("var/.wh..wh..opq", b"")
        .file("var/new", b"n");
    l2.file("etc/group", b"g2");
    let mut l3 = Layer::new();
    l3.file("etc/passwd", b"back").file("var/.wh.new", b"");
    let blobs: Vec<PathBuf> = [&l1, &l2, &l3]
        .iter()
        .enumerate()
        .map(|(i, l)| s.write_layer(&format!("l{i}.tar"), &l.finish()))
        .collect();
    let mut dirs = Vec::new();
    let flat = s.target.join("flat");
    fs::create_dir(&flat).unwrap();
    for (i, b) in blobs.iter().enumerate() {
        let d = s.target.join(format!("layer{i}"));
        fs::create_dir(&d).unwrap();
        unpack_layer(b, "application/vnd.oci.image.layer.v1.tar", &d).unwrap();
        apply_layer_flat(b, "", &flat).unwrap();
        dirs.push(d);
    }
    let instance = s.target.join("instance");
    let snap = mount_snapshot(&dirs, &instance).unwrap();
    let strip_dir_mtimes = |t: std::collections::BTreeMap<PathBuf, String>| {
        t.into_iter()
            .map(|(p, d)| {
                let d = if d.starts_with("dir") {
                    d.split(' ')
                        .filter(|w| !w.starts_with("mtime="))
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    d
                };
                (p, d)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let merged = strip_dir_mtimes(unpack_util::tree(&snap.rootfs));
    let want = strip_dir_mtimes(unpack_util::tree(&flat));
    let r = std::panic::catch_unwind(|| {
        assert_eq!(merged, want);
        assert_eq!(fs::read(snap.rootfs.join("etc/passwd")).unwrap(), b"back");
        assert!(
            fs::read_dir(snap.rootfs.join("var")).unwrap().next().is_none(),
            "var should be empty"
        );
    });
    remove_and_check(snap, &instance);
    r.unwrap();
    s.assert_outside_untouched();
}
