//! ext4 disk images: layers flattened (whiteouts applied) and turned into an image by mkfs.ext4 -d, checked
//! with e2fsck -fn, debugfs and dumpe2fs (e2fsprogs). Run as root.

mod unpack_util;

use std::fs;
use std::path::Path;
use std::process::Command;

use sha2::{Digest as _, Sha256};
use unpack_util::{require_root, run, Layer, Scratch};
use vessel_image::ext4::{build_ext4, build_ext4_from_dir};
use vessel_image::store::Store;
use vessel_image::unpack::apply_layer_flat;

fn debugfs(img: &Path, req: &str) -> String {
    run(Command::new("debugfs").arg("-R").arg(req).arg(img))
}

/// Layer 1: a busybox tree packed by GNU tar (gzip). Layer 2: whiteouts and an opaque dir.
fn busybox_layers(s: &Scratch) -> (Vec<u8>, Vec<u8>) {
    let src = s.layers.join("rootfs");
    unpack_util::busybox_tree(&src);
    fs::create_dir_all(src.join("var/cache/apk")).unwrap();
    fs::write(src.join("var/cache/apk/index"), b"old").unwrap();
    let tar = s.layers.join("bb.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let l1 = unpack_util::gzip(&fs::read(&tar).unwrap());
    let mut l2 = Layer::new();
    l2.file("bin/.wh.vi", b"")
        .file("etc/motd", b"welcome to vessel\n");
    l2.dir("var/cache/")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"n");
    (l1, l2.finish())
}

fn check_image(img: &Path, free_bytes: u64) {
    run(Command::new("e2fsck").arg("-fn").arg(img));
    let bin = debugfs(img, "ls -l /bin");
    let names: Vec<&str> = bin.lines().filter_map(|l| l.split_whitespace().last()).collect();
    assert!(
        names.contains(&"busybox") && names.contains(&"sh") && names.contains(&"ls"),
        "{bin}"
    );
    assert!(!names.contains(&"vi"), "vi was whited out:\n{bin}");
    let st = debugfs(img, "stat /bin/busybox");
    assert!(st.contains("Mode:  04755"), "{st}");
    let links: u32 = st
        .split("Links: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(links > 100, "applets should stay hard links ({links})");
    assert_eq!(debugfs(img, "cat /etc/motd"), "welcome to vessel\n");
    assert!(debugfs(img, "stat /dev/null").contains("Type: character special"));
    let cache = debugfs(img, "ls /var/cache");
    assert!(cache.contains("new") && !cache.contains("apk"), "{cache}");
    let attrs = debugfs(img, "ea_list /etc/passwd");
    assert!(
        attrs.contains("user.vessel") && attrs.contains("roundtrip"),
        "{attrs}"
    );
    let sb = run(Command::new("dumpe2fs").arg("-h").arg(img));
    let field = |name: &str| -> u64 {
        let line = sb
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in dumpe2fs"));
        line.split(':').nth(1).unwrap().trim().parse().unwrap()
    };
    assert!(sb.contains("has_journal"), "the journal is kept");
    assert!(sb.contains("Filesystem volume name:   vessel"));
    let free = field("Free blocks") * 4096;
    assert!(free >= free_bytes, "{free} bytes free, wanted {free_bytes}");
    let size = fs::metadata(img).unwrap().len();
    assert!(
        size < free_bytes + (64 << 20),
        "image of {size} bytes is far larger than needed"
    );
}

#[test]
fn ext4_from_a_flattened_busybox_tree() {
    require_root();
    let s = Scratch::new("ext4dir");
    let (l1, l2) = busybox_layers(&s);
    let flat = s.target.join("flat");
    fs::create_dir(&flat).unwrap();
    apply_layer_flat(
        &s.write_layer("l1.tgz", &l1),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &flat,
    )
    .unwrap();
    apply_layer_flat(
        &s.write_layer("l2.tar", &l2),
        "application/vnd.oci.image.layer.v1.tar",
        &flat,
    )
    .unwrap();
    let img = s.target.join("disk.ext4");
    let free = 32 << 20;
    build_ext4_from_dir(&flat, &img, free).unwrap();
    check_image(&img, free);
    // Nothing else left next to the image.
    let names: Vec<_> = fs::read_dir(&s.target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    s.assert_outside_untouched();
}

#[test]
fn ext4_from_a_stored_image() {
    require_root();
    let s = Scratch::new("ext4store");
    let (l1, l2) = busybox_layers(&s);
    let store = Store::open(&s.target.join("store")).unwrap();
    let sha = |b: &[u8]| format!("sha256:{:x}", Sha256::digest(b));
    let diff1 = sha(&flate2::read::GzDecoder::new(&l1[..]).bytes_all());
    let d1 = store.put_blob_bytes(&l1).unwrap();
    let d2 = store.put_blob_bytes(&l2).unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff1}","{}"]}}}}"#,
        sha(&l2)
    );
    let dc = store.put_blob_bytes(config.as_bytes()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{dc}","size":{}}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d1}","size":{}}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d2}","size":{}}}]}}"#,
        config.len(),
        l1.len(),
        l2.len()
    );
    let dm = store.put_blob_bytes(manifest.as_bytes()).unwrap();
    store
        .set_name(
            "vessel/ext4-test:latest",
            &dm,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.len() as u64,
        )
        .unwrap();
    let image = store.find("vessel/ext4-test:latest").unwrap();
    let img = s.target.join("disk.ext4");
    build_ext4(&store, &image, &img, 16 << 20).unwrap();
    check_image(&img, 16 << 20);
    // A config whose diff ids do not match the layers is refused.
    let bad_config = config.replace(&diff1, &sha(b"something else"));
    let dbc = store.put_blob_bytes(bad_config.as_bytes()).unwrap();
    let bad_manifest = manifest.replace(&dc.to_string(), &dbc.to_string()).replace(
        &format!("\"size\":{}}}", config.len()),
        &format!("\"size\":{}}}", bad_config.len()),
    );
    let dbm = store.put_blob_bytes(bad_manifest.as_bytes()).unwrap();
    let mt = "application/vnd.oci.image.manifest.v1+json";
    store
        .set_name("vessel/ext4-bad:latest", &dbm, mt, bad_manifest.len() as u64)
        .unwrap();
    let bad = store.find("vessel/ext4-bad:latest").unwrap();
    let e = build_ext4(&store, &bad, &s.target.join("bad.ext4"), 1 << 20).unwrap_err();
    assert!(e.to_string().contains("the config says"), "{e}");
    assert!(!s.target.join("bad.ext4").exists());
    // The flattened trees were removed from the store's tmp/.
    let tmp = s.target.join("store/tmp");
    assert!(
        !tmp.exists()
            || fs::read_dir(&tmp).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("ext4-"))
    );
}

trait BytesAll {
    fn bytes_all(self) -> Vec<u8>;
}

impl<R: std::io::Read> BytesAll for R {
    fn bytes_all(mut self) -> Vec<u8> {
        let mut v = Vec::new();
        self.read_to_end(&mut v).unwrap();
        v
    }
}
