//! Crafted hostile layers: each one either fails with an error or lands inside the target, and nothing next
//! to the target (a sentinel directory) or at /etc/passwd is created, changed or deleted. Run as root.

mod unpack_util;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use unpack_util::{require_root, Layer, Scratch};
use vessel_image::unpack::{apply_layer, unpack_layer, unpack_layer_with, Mode, UnpackError, UnpackOptions};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn opts(mode: Mode) -> UnpackOptions {
    match mode {
        Mode::Overlay => UnpackOptions::overlay(),
        Mode::Flat => UnpackOptions::flat(),
    }
}

/// Unpack `layer` into a fresh scratch target in `mode`; check the outside; return the scratch and result.
fn try_unpack(name: &str, mode: Mode, layer: &Layer) -> (Scratch, Result<(), UnpackError>) {
    require_root();
    let s = Scratch::new(name);
    let blob = s.write_layer("layer.tar", &layer.finish());
    let r = unpack_layer_with(&blob, TAR, &s.target, &opts(mode)).map(drop);
    s.assert_outside_untouched();
    (s, r)
}

fn both_modes(
    name: &str,
    layer: impl Fn(&Scratch) -> Layer,
    check: impl Fn(&Scratch, Result<(), UnpackError>),
) {
    for mode in [Mode::Overlay, Mode::Flat] {
        require_root();
        let s = Scratch::new(name);
        let l = layer(&s);
        let blob = s.write_layer("layer.tar", &l.finish());
        let r = unpack_layer_with(&blob, TAR, &s.target, &opts(mode)).map(drop);
        s.assert_outside_untouched();
        check(&s, r);
    }
}

fn assert_invalid(r: Result<(), UnpackError>, needle: &str) {
    let e = r.expect_err("the layer should be refused");
    let msg = e.to_string();
    assert!(msg.contains(needle), "error {msg:?} does not mention {needle:?}");
    assert!(
        msg.starts_with("Layer "),
        "error {msg:?} does not start by naming the layer"
    );
}

#[test]
fn dotdot_names_are_refused() {
    for name in [
        "../escape",
        "a/../../escape",
        "./../escape",
        "/../escape",
        "..",
        "a/b/../../../../escape",
    ] {
        let mut l = Layer::new();
        l.file(name, b"pwned");
        let (s, r) = try_unpack("dotdot", Mode::Flat, &l);
        assert_invalid(r, "'..'");
        assert!(!s.base.join("escape").exists());
    }
    // '..' in a directory, symlink, device and hard link name too.
    let mut l = Layer::new();
    l.dir("../escapedir/");
    assert_invalid(try_unpack("dotdot", Mode::Overlay, &l).1, "'..'");
    let mut l = Layer::new();
    l.symlink("../escapelink", "/");
    assert_invalid(try_unpack("dotdot", Mode::Overlay, &l).1, "'..'");
    let mut l = Layer::new();
    l.raw(b'3', b"../null", b"", 0o666, b"");
    assert_invalid(try_unpack("dotdot", Mode::Overlay, &l).1, "'..'");
}

#[test]
fn absolute_names_land_inside() {
    both_modes(
        "abs",
        |s| {
            let mut l = Layer::new();
            l.file("/abs/file", b"a");
            l.file("//abs2", b"b");
            // The sentinel's own absolute path: must land at target/<that path>.
            l.file(&format!("{}/file", s.sentinel.display()), b"pwned");
            l
        },
        |s, r| {
            r.unwrap();
            assert_eq!(fs::read(s.inside("abs/file")).unwrap(), b"a");
            assert_eq!(fs::read(s.inside("abs2")).unwrap(), b"b");
            assert_eq!(fs::read(s.inside(s.sentinel.join("file"))).unwrap(), b"pwned");
        },
    );
}

#[test]
fn symlink_in_parent_resolves_inside() {
    both_modes(
        "symparent",
        |s| {
            let mut l = Layer::new();
            l.symlink("a", &s.sentinel.display().to_string()); // absolute, pointing at the real sentinel
            l.file("a/file", b"pwned");
            l.file("a/new", b"new");
            l.symlink("up", "../../../../../../../../.."); // relative, climbing far
            l.file("up/uptop", b"x");
            l.symlink("e", "/etc");
            l.file("e/passwd", b"root::0:0::/:/bin/sh\n");
            l
        },
        |s, r| {
            r.unwrap();
            let landed = s.inside(&s.sentinel);
            assert_eq!(fs::read(landed.join("file")).unwrap(), b"pwned");
            assert_eq!(fs::read(landed.join("new")).unwrap(), b"new");
            assert_eq!(fs::read(s.inside("uptop")).unwrap(), b"x");
            assert!(fs::symlink_metadata(s.inside("e"))
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(
                fs::read(s.inside("etc/passwd")).unwrap(),
                b"root::0:0::/:/bin/sh\n"
            );
        },
    );
}

#[test]
fn symlink_then_file_with_the_same_name_replaces_the_symlink() {
    both_modes(
        "symfinal",
        |s| {
            let mut l = Layer::new();
            l.symlink("f", &s.sentinel.join("file").display().to_string());
            l.file("f", b"pwned");
            l.symlink("d", &s.sentinel.join("dir").display().to_string());
            l.dir("d/");
            l.symlink("n", &s.sentinel.join("dir/fifo").display().to_string());
            l.raw(b'6', b"n", b"", 0o644, b"");
            l
        },
        |s, r| {
            r.unwrap();
            let f = fs::symlink_metadata(s.inside("f")).unwrap();
            assert!(f.is_file());
            assert_eq!(fs::read(s.inside("f")).unwrap(), b"pwned");
            assert!(fs::symlink_metadata(s.inside("d")).unwrap().is_dir());
            assert!(fs::symlink_metadata(s.inside("n")).unwrap().file_type().is_fifo());
        },
    );
}

#[test]
fn symlink_replacing_a_directory_written_earlier() {
    both_modes(
        "symreplace",
        |s| {
            let mut l = Layer::new();
            l.dir("d/");
            l.file("d/x", b"x");
            l.symlink("d", &s.sentinel.display().to_string());
            l.file("d/y", b"pwned");
            l.raw(b'3', b"d/null", b"", 0o666, b"");
            l
        },
        |s, r| {
            r.unwrap();
            assert!(fs::symlink_metadata(s.inside("d"))
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(fs::read(s.inside(s.sentinel.join("y"))).unwrap(), b"pwned");
            assert!(fs::symlink_metadata(s.inside(s.sentinel.join("null")))
                .unwrap()
                .file_type()
                .is_char_device());
        },
    );
}

#[test]
fn hard_links_cannot_reach_outside() {
    require_root();
    let passwd_nlink = fs::metadata("/etc/passwd").unwrap().nlink();
    // A link to an absolute path names the target's own /etc/passwd, which does not exist.
    let mut l = Layer::new();
    l.hardlink("l", "/etc/passwd");
    let (s, r) = try_unpack("hardlink", Mode::Flat, &l);
    assert_invalid(r, "does not exist");
    assert!(!s.inside("l").exists());
    // With '..'.
    let mut l = Layer::new();
    l.hardlink("l", "../sentinel/file");
    assert_invalid(try_unpack("hardlink", Mode::Overlay, &l).1, "'..'");
    // Through a symlink in a parent component.
    both_modes(
        "hardlink",
        |s| {
            let mut l = Layer::new();
            l.symlink("s", &s.sentinel.display().to_string());
            l.hardlink("h", "s/file");
            l
        },
        |_, r| assert_invalid(r, "does not exist"),
    );
    // To a symlink (the link is to the symlink itself), then written over: nothing is written through.
    both_modes(
        "hardlink",
        |s| {
            let mut l = Layer::new();
            l.symlink("s", &s.sentinel.join("file").display().to_string());
            l.hardlink("h", "s");
            l.file("h", b"pwned");
            l.file("s", b"pwned too");
            l
        },
        |s, r| {
            r.unwrap();
            assert_eq!(fs::read(s.inside("h")).unwrap(), b"pwned");
            assert_eq!(fs::read(s.inside("s")).unwrap(), b"pwned too");
        },
    );
    // A link to a directory, and a link to itself.
    let mut l = Layer::new();
    l.dir("d/");
    l.hardlink("h", "d");
    assert_invalid(try_unpack("hardlink", Mode::Flat, &l).1, "directory");
    let mut l = Layer::new();
    l.file("f", b"f");
    l.hardlink("f", "f");
    let (s, r) = try_unpack("hardlink", Mode::Flat, &l);
    r.unwrap();
    assert_eq!(fs::read(s.inside("f")).unwrap(), b"f");
    // Links inside the layer work, also through an in-target symlink.
    let mut l = Layer::new();
    l.file("real/f", b"data");
    l.symlink("alias", "/real");
    l.hardlink("h1", "real/f");
    l.hardlink("h2", "alias/f");
    let (s, r) = try_unpack("hardlink", Mode::Overlay, &l);
    r.unwrap();
    assert_eq!(fs::metadata(s.inside("real/f")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_nlink);
}

#[test]
fn whiteouts_cannot_delete_outside() {
    for mode in [Mode::Flat, Mode::Overlay] {
        let mut l = Layer::new();
        l.file("../.wh.sentinel", b"");
        assert_invalid(try_unpack("wh", mode, &l).1, "'..'");
        let mut l = Layer::new();
        l.file(".wh...", b"");
        assert_invalid(try_unpack("wh", mode, &l).1, "whiteout");
        let mut l = Layer::new();
        l.file(".wh.", b"");
        assert_invalid(try_unpack("wh", mode, &l).1, "whiteout");
    }
    both_modes(
        "wh",
        |s| {
            let mut l = Layer::new();
            l.symlink("a", &s.base.display().to_string());
            l.file("a/.wh.sentinel", b"");
            l
        },
        |_, r| r.unwrap(),
    );
    both_modes(
        "wh",
        |s| {
            let mut l = Layer::new();
            l.symlink("b", &s.sentinel.display().to_string());
            l.file("b/.wh.file", b"");
            l.file("b/.wh..wh..opq", b"");
            l.file(&format!("{}/.wh.file", s.sentinel.display()), b"");
            l.file(&format!("{}/.wh..wh..opq", s.sentinel.display()), b"");
            l
        },
        |s, r| {
            r.unwrap();
            assert!(unpack_util::get_xattr(&s.sentinel, "trusted.overlay.opaque").is_none());
        },
    );
}

#[test]
fn symlink_loops_and_dangling_parents() {
    let mut l = Layer::new();
    l.symlink("a", "b");
    l.symlink("b", "a");
    l.file("a/x", b"x");
    let (_, r) = try_unpack("loop", Mode::Overlay, &l);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("a/x") && msg.contains("symbolic links"), "{msg}");

    both_modes(
        "dangling",
        |s| {
            let mut l = Layer::new();
            l.symlink("a", &format!("{}/nonexistent/deep", s.base.display()));
            l.file("a/f", b"f");
            l.symlink("p", "/proc/self/root");
            l.file("p/tmp/x", b"x");
            l
        },
        |s, r| {
            r.unwrap();
            assert_eq!(
                fs::read(s.inside(s.base.join("nonexistent/deep/f"))).unwrap(),
                b"f"
            );
            assert_eq!(fs::read(s.inside("proc/self/root/tmp/x")).unwrap(), b"x");
            assert!(!s.base.join("nonexistent").exists());
        },
    );
}

#[test]
fn overlay_xattrs_in_a_layer_are_dropped() {
    let mut l = Layer::new();
    l.pax(&[
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("SCHILY.xattr.user.ok", b"1"),
    ]);
    l.dir("d/");
    l.pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")]);
    l.dir("e/");
    let (s, r) = try_unpack("ovlxattr", Mode::Overlay, &l);
    r.unwrap();
    assert_eq!(
        unpack_util::xattrs(&s.inside("d")),
        vec![("user.ok".to_string(), "1".to_string())]
    );
    assert!(unpack_util::xattrs(&s.inside("e")).is_empty());
}

#[test]
fn malformed_streams_are_errors_not_panics() {
    require_root();
    let s = Scratch::new("garbage");
    let good = {
        let mut l = Layer::new();
        l.file("a", &[7u8; 5000]).file("b", b"b");
        l.finish()
    };
    let try_bytes = |data: &[u8], mt: &str| {
        let t = s.base.join("target");
        let _ = fs::remove_dir_all(&t);
        fs::create_dir(&t).unwrap();
        apply_layer(data, "test", mt, &t, &UnpackOptions::overlay())
    };
    // Truncated inside a file's data, inside a header, and compressed streams cut short.
    assert!(try_bytes(&good[..512 + 1000], TAR)
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    assert!(try_bytes(&good[..512 * 11 + 100], TAR).is_err());
    let gz = unpack_util::gzip(&good);
    assert!(try_bytes(&gz[..gz.len() - 10], "").is_err());
    let zs = unpack_util::zstd(&good);
    assert!(try_bytes(&zs[..zs.len() - 5], "").is_err());
    // A bad checksum, random bytes, a header claiming a huge size, gzip magic then garbage.
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    assert!(try_bytes(&bad, TAR).unwrap_err().to_string().contains("checksum"));
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert!(try_bytes(&noise, TAR).is_err());
    let mut l = Layer::new();
    l.raw(b'0', b"huge", b"", 0o644, b"");
    let mut huge = l.finish();
    huge[124..136].copy_from_slice(b"77777777777\0");
    let mut h = tar::Header::from_byte_slice(&huge[..512]).clone();
    h.set_cksum();
    huge[..512].copy_from_slice(h.as_bytes());
    assert!(try_bytes(&huge, TAR).is_err());
    assert!(try_bytes(&[0x1f, 0x8b, 1, 2, 3, 4, 5], "").is_err());
    assert!(try_bytes(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1], "")
        .unwrap_err()
        .to_string()
        .contains("xz"));
    // Not a layer media type.
    assert!(matches!(
        try_bytes(&good, "application/vnd.oci.image.config.v1+json"),
        Err(UnpackError::MediaType(_))
    ));
    // Sparse files and unknown types.
    let mut l = Layer::new();
    l.raw(b'S', b"sparse", b"", 0o644, b"");
    assert!(try_bytes(&l.finish(), TAR).is_err());
    let mut l = Layer::new();
    l.raw(b'Z', b"what", b"", 0o644, b"");
    assert!(try_bytes(&l.finish(), TAR)
        .unwrap_err()
        .to_string()
        .contains("unsupported entry type"));
    // Non-directories naming the top of the layer.
    let mut l = Layer::new();
    l.file(".", b"x");
    assert!(try_bytes(&l.finish(), TAR).is_err());
    s.assert_outside_untouched();
}

#[test]
fn limits_are_enforced() {
    require_root();
    let s = Scratch::new("limits");
    let mut l = Layer::new();
    for i in 0..20 {
        l.file(&format!("f{i}"), &[1u8; 2000]);
    }
    let data = l.finish();
    let mut o = UnpackOptions::overlay();
    o.max_entries = 10;
    let e = apply_layer(&data[..], "many", TAR, &s.target, &o).unwrap_err();
    assert!(
        matches!(
            e,
            UnpackError::Limit {
                what: "number of entries",
                ..
            }
        ),
        "{e}"
    );
    let mut o = UnpackOptions::overlay();
    o.max_size = 20_000;
    let e = apply_layer(&data[..], "big", TAR, &s.target, &o).unwrap_err();
    assert!(
        matches!(
            e,
            UnpackError::Limit {
                what: "uncompressed size",
                ..
            }
        ),
        "{e}"
    );
    // A PAX header larger than the header budget.
    let mut l = Layer::new();
    l.pax(&[("comment", &vec![b'x'; 300_000])]);
    l.file("f", b"f");
    let mut o = UnpackOptions::overlay();
    o.max_header_bytes = 64 << 10;
    let e = apply_layer(&l.finish()[..], "pax", TAR, &s.target, &o).unwrap_err();
    assert!(matches!(e, UnpackError::Limit { .. }), "{e}");
    s.assert_outside_untouched();
}

#[test]
fn unpack_layer_reports_missing_blob_and_target() {
    let e = unpack_layer(Path::new("/nonexistent/blob"), TAR, Path::new("/tmp")).unwrap_err();
    assert!(
        e.to_string().starts_with("Cannot open layer /nonexistent/blob"),
        "{e}"
    );
    let s = Scratch::new("missing");
    let blob = s.write_layer("l.tar", &Layer::new().finish());
    let e = unpack_layer(&blob, TAR, &s.base.join("nope")).unwrap_err();
    assert!(e.to_string().contains("Cannot open unpack target"), "{e}");
}
