//! Round trips: a busybox root filesystem packed by GNU tar (plain, gzip, zstd) unpacks to the same tree
//! (types, modes incl. setuid, owners, mtimes, hard links, devices, fifos, xattrs), with the right diff id;
//! and every kind of metadata from a tar written by the `tar` crate. Run as root.

mod unpack_util;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use unpack_util::{require_root, run, Layer, Scratch};
use vessel_image::unpack::{
    apply_layer_flat, unpack_layer, unpack_layer_with, Compression, Mode, UnpackOptions,
};

/// Inode groups: which paths are hard links of each other.
fn link_groups(root: &Path) -> Vec<Vec<String>> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let out = run(Command::new("find")
        .arg(root)
        .args(["-type", "f", "-printf", "%i %P\n"]));
    for line in out.lines() {
        let (ino, p) = line.split_once(' ').unwrap();
        by_ino
            .entry(ino.parse().unwrap())
            .or_default()
            .push(p.to_string());
    }
    let mut groups: Vec<Vec<String>> = by_ino
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    groups
}

#[test]
fn busybox_layer_round_trips() {
    require_root();
    let s = Scratch::new("busybox");
    let src = s.layers.join("rootfs");
    unpack_util::busybox_tree(&src);
    let tar_path = s.layers.join("layer.tar");
    run(Command::new("tar")
        .args([
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--format=posix",
            "-C",
        ])
        .arg(&src)
        .arg("-cf")
        .arg(&tar_path)
        .arg("."));
    let raw = fs::read(&tar_path).unwrap();
    let want_diff_id = format!("sha256:{:x}", Sha256::digest(&raw));
    let gz = s.write_layer("layer.tar.gz", &unpack_util::gzip(&raw));
    let zst = s.write_layer("layer.tar.zst", &unpack_util::zstd(&raw));
    let want = unpack_util::tree(&src);
    let want_links = link_groups(&src);
    assert!(
        want_links.iter().any(|g| g.len() > 100),
        "busybox applets should be hard links"
    );

    let cases = [
        (
            &tar_path,
            "application/vnd.oci.image.layer.v1.tar",
            Compression::None,
        ),
        (
            &gz,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Gzip,
        ),
        (
            &gz,
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Gzip,
        ),
        (
            &zst,
            "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::Zstd,
        ),
        // Mislabelled or unlabelled: the magic bytes decide.
        (
            &zst,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd,
        ),
        (&gz, "", Compression::Gzip),
    ];
    for (i, (blob, mt, compression)) in cases.iter().enumerate() {
        for mode in [Mode::Overlay, Mode::Flat] {
            let dst = s.target.join(format!("{i}-{mode:?}"));
            fs::create_dir(&dst).unwrap();
            let opts = if mode == Mode::Flat {
                UnpackOptions::flat()
            } else {
                UnpackOptions::overlay()
            };
            let got = unpack_layer_with(blob, mt, &dst, &opts).unwrap();
            assert_eq!(got.diff_id, want_diff_id, "{mt}");
            assert_eq!(got.size, raw.len() as u64);
            assert_eq!(got.compression, *compression);
            let tree = unpack_util::tree(&dst);
            for (p, d) in &want {
                assert_eq!(tree.get(p), Some(d), "{} differs ({mt}, {mode:?})", p.display());
            }
            assert_eq!(tree.len(), want.len(), "extra entries ({mt}, {mode:?})");
            assert_eq!(link_groups(&dst), want_links);
            // The root of the layer ("./") takes the source's mode and mtime.
            let (a, b) = (fs::metadata(&src).unwrap(), fs::metadata(&dst).unwrap());
            assert_eq!((a.mode(), a.mtime()), (b.mode(), b.mtime()));
        }
    }
    // The unpacked busybox runs.
    let out = run(Command::new("chroot").arg(s.target.join("0-Overlay")).args([
        "/bin/sh",
        "-c",
        "echo ok; ls /etc",
    ]));
    assert_eq!(out, "ok\ngroup\nmtab\npasswd\n");
    s.assert_outside_untouched();
}

#[test]
fn all_metadata_from_the_tar_crate() {
    require_root();
    let s = Scratch::new("meta");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("bin/su").unwrap();
    h.set_mode(0o4755);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_234_567_890);
    h.set_size(5);
    h.set_cksum();
    b.append(&h, &b"hello"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path("ro/").unwrap();
    h.set_mode(0o2555);
    h.set_uid(7);
    h.set_gid(8);
    h.set_mtime(1_000_000_000);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &b""[..]).unwrap();
    for (name, kind, maj, min) in [
        ("ro/null", tar::EntryType::Char, 1, 3),
        ("ro/loop0", tar::EntryType::Block, 7, 0),
        ("ro/fifo", tar::EntryType::Fifo, 0, 0),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(name).unwrap();
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(6);
        h.set_mtime(1_111_111_111);
        h.set_device_major(maj).unwrap();
        h.set_device_minor(min).unwrap();
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_uid(33);
    h.set_gid(33);
    h.set_mtime(1_222_222_222);
    h.set_size(0);
    b.append_link(&mut h, "link", "bin/su").unwrap();
    let mut tarball = b.into_inner().unwrap();
    tarball.truncate(tarball.len() - 1024);
    // PAX records: sub-second mtime, big uid, xattrs.
    let mut l = Layer::new();
    l.pax(&[
        ("mtime", b"1500000000.25"),
        ("uid", b"3000000000"),
        ("SCHILY.xattr.user.color", b"blue"),
        ("SCHILY.xattr.trusted.t", b"\x00\x01binary"),
    ]);
    l.file("pax-file", b"p");
    tarball.extend_from_slice(&l.finish());
    let blob = s.write_layer("meta.tar", &tarball);
    unpack_layer(&blob, "application/vnd.oci.image.layer.v1.tar", &s.target).unwrap();

    let m = fs::metadata(s.inside("bin/su")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o4755, 1234, 5678, 1_234_567_890)
    );
    assert_eq!(fs::read(s.inside("bin/su")).unwrap(), b"hello");
    let m = fs::metadata(s.inside("ro")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o2555, 7, 8, 1_000_000_000)
    );
    let m = fs::metadata(s.inside("ro/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(
        (m.rdev(), m.mode() & 0o7777, m.gid()),
        (libc::makedev(1, 3), 0o640, 6)
    );
    let m = fs::metadata(s.inside("ro/loop0")).unwrap();
    assert!(m.file_type().is_block_device());
    assert_eq!(m.rdev(), libc::makedev(7, 0));
    assert!(fs::metadata(s.inside("ro/fifo")).unwrap().file_type().is_fifo());
    let m = fs::symlink_metadata(s.inside("link")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mtime()), (33, 33, 1_222_222_222));
    assert_eq!(fs::read_link(s.inside("link")).unwrap(), Path::new("bin/su"));
    let m = fs::metadata(s.inside("pax-file")).unwrap();
    assert_eq!(
        (m.uid(), m.mtime(), m.mtime_nsec()),
        (3_000_000_000, 1_500_000_000, 250_000_000)
    );
    assert_eq!(
        unpack_util::get_xattr(&s.inside("pax-file"), "user.color").unwrap(),
        b"blue"
    );
    assert_eq!(
        unpack_util::get_xattr(&s.inside("pax-file"), "trusted.t").unwrap(),
        b"\x00\x01binary"
    );
    // Directory mtimes survive the entries written into them afterwards.
    assert_eq!(fs::metadata(s.inside("ro")).unwrap().mtime(), 1_000_000_000);

    // Flat mode applies a second layer over the first.
    let mut l = Layer::new();
    l.file("bin/su", b"replaced").file("ro/.wh.fifo", b"");
    let blob2 = s.write_layer("meta2.tar", &l.finish());
    apply_layer_flat(&blob2, "application/vnd.oci.image.layer.v1.tar", &s.target).unwrap();
    assert_eq!(fs::read(s.inside("bin/su")).unwrap(), b"replaced");
    assert!(!s.inside("ro/fifo").exists());
    assert!(s.inside("ro/null").exists());
    s.assert_outside_untouched();
}
