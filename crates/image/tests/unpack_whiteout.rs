//! OCI whiteouts in both modes: overlay (kept as overlayfs whiteouts and opaque xattrs) and flat (applied).

mod unpack_util;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use unpack_util::{require_root, Layer, Scratch};
use vessel_image::unpack::{apply_layer, Mode, UnpackOptions, OVERLAY_OPAQUE_XATTR};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn apply(s: &Scratch, l: &Layer, mode: Mode) {
    let o = if mode == Mode::Flat {
        UnpackOptions::flat()
    } else {
        UnpackOptions::overlay()
    };
    apply_layer(&l.finish()[..], "test", TAR, &s.target, &o).unwrap();
}

fn lower() -> Layer {
    let mut l = Layer::new();
    l.dir("etc/").file("etc/passwd", b"p").file("etc/group", b"g");
    l.dir("var/")
        .dir("var/old/")
        .dir("var/old/deep/")
        .file("var/old/deep/file", b"f")
        .file("var/keep", b"k");
    l.dir("var/sub/").file("var/sub/a", b"a");
    l.dir("opt/")
        .dir("opt/sub/")
        .file("opt/sub/a", b"a")
        .file("opt/x", b"x");
    l
}

#[test]
fn overlay_mode_writes_overlayfs_whiteouts() {
    require_root();
    let s = Scratch::new("wh-overlay");
    let mut l = Layer::new();
    l.file("etc/.wh.passwd", b"");
    l.dir("var/");
    l.file("var/.wh..wh..opq", b"");
    l.file("var/new", b"n");
    l.file("opt/deep/.wh..wh..opq", b""); // its directory is not in the layer: created
    l.file("usr/.wh..wh.plnk", b""); // AUFS bookkeeping: ignored
    apply(&s, &l, Mode::Overlay);

    let wh = fs::symlink_metadata(s.inside("etc/passwd")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "etc/passwd should be a whiteout device"
    );
    assert_eq!(wh.rdev(), 0);
    assert!(!s.inside("etc/.wh.passwd").exists());
    assert_eq!(
        unpack_util::get_xattr(&s.inside("var"), OVERLAY_OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert!(!s.inside("var/.wh..wh..opq").exists());
    assert_eq!(fs::read(s.inside("var/new")).unwrap(), b"n");
    assert_eq!(
        unpack_util::get_xattr(&s.inside("opt/deep"), OVERLAY_OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert!(!s.inside("usr").exists());
    s.assert_outside_untouched();
}

#[test]
fn flat_mode_applies_whiteouts() {
    require_root();
    let s = Scratch::new("wh-flat");
    apply(&s, &lower(), Mode::Flat);
    let mut l = Layer::new();
    l.file("etc/.wh.passwd", b"");
    l.file("etc/.wh.missing", b""); // nothing to delete: fine
    l.file("nodir/.wh.x", b"");
    l.dir("var/");
    l.file("var/new", b"n"); // before the opaque marker, in this layer: kept
    l.file("var/.wh..wh..opq", b"");
    l.file("var/after", b"a");
    l.file("usr/.wh..wh.plnk", b"");
    apply(&s, &l, Mode::Flat);

    assert!(!s.inside("etc/passwd").exists());
    assert_eq!(fs::read(s.inside("etc/group")).unwrap(), b"g");
    assert!(!s.inside("nodir").exists());
    let mut var: Vec<_> = fs::read_dir(s.inside("var"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    var.sort();
    assert_eq!(var, ["after", "new"]);
    assert!(unpack_util::get_xattr(&s.inside("var"), OVERLAY_OPAQUE_XATTR).is_none());
    assert!(!s.inside("usr/.wh..wh.plnk").exists());
    s.assert_outside_untouched();
}

#[test]
fn flat_opaque_clears_lower_content_of_directories_this_layer_keeps() {
    require_root();
    let s = Scratch::new("wh-flat-reuse");
    apply(&s, &lower(), Mode::Flat);
    let mut l = Layer::new();
    // var/sub is listed before the marker (so it is kept), but what the lower layer put in it must go.
    l.dir("var/")
        .dir("var/sub/")
        .file("var/sub/b", b"b")
        .file("var/.wh..wh..opq", b"");
    // opt: marker first, then a directory of the same name as a lower one.
    l.file("opt/.wh..wh..opq", b"")
        .dir("opt/sub/")
        .file("opt/sub/c", b"c");
    apply(&s, &l, Mode::Flat);
    let names = |d: &str| {
        let mut v: Vec<_> = fs::read_dir(s.inside(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("var"), ["sub"]);
    assert_eq!(names("var/sub"), ["b"]);
    assert_eq!(names("opt"), ["sub"]);
    assert_eq!(names("opt/sub"), ["c"]);
    s.assert_outside_untouched();
}

#[test]
fn whiteout_of_a_directory_removes_its_tree() {
    require_root();
    let s = Scratch::new("wh-tree");
    apply(&s, &lower(), Mode::Flat);
    let mut l = Layer::new();
    l.file(".wh.var", b"");
    apply(&s, &l, Mode::Flat);
    assert!(!s.inside("var").exists());
    assert!(s.inside("etc/group").exists());

    // In overlay mode, a whiteout replaces whatever this layer had at that name.
    let s = Scratch::new("wh-tree-ovl");
    let mut l = lower();
    l.file(".wh.var", b"");
    apply(&s, &l, Mode::Overlay);
    assert!(fs::symlink_metadata(s.inside("var"))
        .unwrap()
        .file_type()
        .is_char_device());
}
