//! Import of root filesystems (directories and tarballs), names and ids, inspection, tag / remove / prune
//! with garbage collection of blobs and unpacked layers.

mod store_support;

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use store_support::*;
use vessel_image::store::{Digest, ImageRecord, ImportConfig, StoreError, OCI_MANIFEST};

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and `value` is valid for its length.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buf` is valid for its length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (rc >= 0).then(|| buf[..rc as usize].to_vec())
}

fn gunzip_digest(path: &Path) -> Digest {
    let mut d = flate2::read::GzDecoder::new(fs::File::open(path).unwrap());
    let mut v = Vec::new();
    d.read_to_end(&mut v).unwrap();
    Digest::of(&v)
}

#[test]
fn import_a_directory_then_list_find_and_inspect() {
    let t = TempDir::new("import-dir");
    let rootfs = t.path("rootfs");
    busybox_rootfs(&rootfs);
    set_xattr(&rootfs.join("etc/passwd"), "user.vessel", b"kept");
    let store = t.store();
    let cfg = ImportConfig {
        cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
        entrypoint: vec!["/bin/busybox".into()],
        env: vec!["A=1".into()],
        workdir: Some("/root".into()),
        user: Some("0:0".into()),
    };
    let image = store.import_rootfs(&rootfs, "vessel/busybox", cfg).unwrap();
    assert_eq!(image.name, "docker.io/vessel/busybox:latest");
    assert_eq!(store.list().unwrap(), vec![image.clone()]);
    let created = image.created.clone().expect("created time");
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.starts_with("20"),
        "{created}"
    );

    // Names, short and full, ids and digests all find it.
    let id = image.config.hex().to_string();
    let by_digest = format!("vessel/busybox@{}", image.manifest);
    for q in [
        "vessel/busybox",
        "vessel/busybox:latest",
        "docker.io/vessel/busybox:latest",
        &id[..12],
        &id[..3],
        &format!("sha256:{}", &id[..12]),
        &id,
        &by_digest,
    ] {
        assert_eq!(store.find(q).unwrap(), image, "find({q:?})");
    }
    for q in [
        "vessel/busybox:other",
        "busybox",
        "ffffffffffff0",
        "other/x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let e = store.find(q).unwrap_err();
        assert!(matches!(e, StoreError::NotFound(_)), "{q}: {e}");
        assert!(
            e.to_string().starts_with("Image ") && e.to_string().ends_with("not found"),
            "{e}"
        );
    }

    // The manifest and config are OCI, with what ImportConfig said.
    let m = store.manifest(&image).unwrap();
    assert_eq!(
        m.media_type().as_ref().map(|t| t.to_string()).as_deref(),
        Some(OCI_MANIFEST)
    );
    assert_eq!(m.layers().len(), 1);
    assert_eq!(
        m.layers()[0].media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        m.config().media_type().to_string(),
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(image.size, m.config().size() + m.layers()[0].size());
    let c = store.config(&image).unwrap();
    assert_eq!(c.architecture().to_string(), "amd64");
    assert_eq!(c.os().to_string(), "linux");
    let rc = c.config().clone().unwrap();
    assert_eq!(rc.cmd().clone().unwrap(), ["sh", "-c", "echo hi"]);
    assert_eq!(rc.entrypoint().clone().unwrap(), ["/bin/busybox"]);
    let env = rc.env().clone().unwrap();
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")) && env.contains(&"A=1".to_string()),
        "{env:?}"
    );
    assert_eq!(rc.working_dir().as_deref(), Some("/root"));
    assert_eq!(rc.user().as_deref(), Some("0:0"));
    let layer = Digest::parse(m.layers()[0].digest().as_ref()).unwrap();
    let diff_id = gunzip_digest(&store.blob_path(&layer));
    assert_eq!(
        c.rootfs().diff_ids(),
        &vec![diff_id.to_string()],
        "diff id is the uncompressed layer's digest"
    );
    assert_eq!(c.created().as_deref(), Some(created.as_str()));
    let history = c.history().clone().unwrap();
    assert!(history[0]
        .created_by()
        .as_deref()
        .unwrap()
        .contains("vessel image import"));

    // Unpacked: content, symlinks, hard links, modes, xattrs.
    let dirs = store.layer_dirs(&image).unwrap();
    assert_eq!(dirs, vec![store.root().join("layers").join(diff_id.hex())]);
    let l = &dirs[0];
    assert!(fs::metadata(l.join("bin/busybox")).unwrap().permissions().mode() & 0o111 != 0);
    assert_eq!(fs::read_link(l.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(
        fs::metadata(l.join("etc/hostname")).unwrap().ino(),
        fs::metadata(l.join("etc/hostname.link")).unwrap().ino()
    );
    assert_eq!(
        get_xattr(&l.join("etc/passwd"), "user.vessel").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        store.layer_dirs(&image).unwrap(),
        dirs,
        "unpacked once, then reused"
    );

    // The same tree again gives the same layer (deterministic tar), stored once.
    let again = store
        .import_rootfs(&rootfs, "vessel/again:1", ImportConfig::default())
        .unwrap();
    let m2 = store.manifest(&again).unwrap();
    assert_eq!(m2.layers()[0].digest(), m.layers()[0].digest());
    assert_eq!(
        store.config(&again).unwrap().rootfs().diff_ids(),
        c.rootfs().diff_ids()
    );
    // manifest + config per image, one shared layer
    assert_eq!(files(&store.layout().join("blobs/sha256")).len(), 5);
}

#[test]
fn import_tarballs_plain_gzip_and_zstd() {
    let t = TempDir::new("import-tar");
    let rootfs = t.path("rootfs");
    busybox_rootfs(&rootfs);
    let tar = t.path("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let raw = fs::read(&tar).unwrap();
    let store = t.store();
    let plain = store
        .import_rootfs(&tar, "from/tar", ImportConfig::default())
        .unwrap();
    let diff = |img: &ImageRecord| store.config(img).unwrap().rootfs().diff_ids()[0].clone();
    assert_eq!(
        diff(&plain),
        Digest::of(&raw).to_string(),
        "the layer is the tarball, byte for byte"
    );

    let gz = t.path("rootfs.tar.gz");
    let mut e = flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, &raw).unwrap();
    e.finish().unwrap();
    let zst = t.path("rootfs.tar.zst");
    fs::write(&zst, zstd::encode_all(raw.as_slice(), 3).unwrap()).unwrap();
    for (src, name) in [(&gz, "from/gz"), (&zst, "from/zst")] {
        let img = store.import_rootfs(src, name, ImportConfig::default()).unwrap();
        assert_eq!(diff(&img), diff(&plain), "{name}");
        assert!(store.layer_dirs(&img).unwrap()[0].join("bin/busybox").is_file());
    }

    // Not tarballs: a clear error naming the image and the file, nothing stored.
    let before = store.list().unwrap();
    let blobs_before = files(&store.layout().join("blobs/sha256"));
    let garbage = t.path("garbage");
    fs::write(&garbage, vec![b'x'; 5000]).unwrap();
    let empty = t.path("empty");
    fs::write(&empty, b"").unwrap();
    for src in [&garbage, &empty, &t.path("missing")] {
        let e = store
            .import_rootfs(src, "bad/one", ImportConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("Cannot import docker.io/bad/one:latest from "),
            "{e}"
        );
        assert!(e.contains(&src.display().to_string()), "{e}");
    }
    assert_eq!(store.list().unwrap(), before);
    assert_eq!(files(&store.layout().join("blobs/sha256")), blobs_before);
    assert!(store
        .import_rootfs(&rootfs, "BAD NAME", ImportConfig::default())
        .is_err());
}

#[test]
fn tag_remove_and_prune_collect_blobs_and_layers() {
    let t = TempDir::new("gc");
    let (store, a) = store_with_busybox(&t, "a:1");
    let small = t.path("small");
    fs::create_dir_all(small.join("etc")).unwrap();
    fs::write(small.join("etc/motd"), "small\n").unwrap();
    let s = store
        .import_rootfs(&small, "small:1", ImportConfig::default())
        .unwrap();
    store.tag("a:1", "b:2").unwrap();
    store.tag(&a.config.hex()[..8], "localhost:5000/c/d:3").unwrap();
    assert_eq!(
        names(&store),
        [
            "docker.io/library/a:1",
            "docker.io/library/b:2",
            "docker.io/library/small:1",
            "localhost:5000/c/d:3"
        ]
    );
    assert_eq!(store.find("b:2").unwrap().config, a.config);
    let a_dirs = store.layer_dirs(&a).unwrap();
    let s_dirs = store.layer_dirs(&s).unwrap();
    let a_blobs: Vec<Digest> = std::iter::once(a.manifest.clone())
        .chain([a.config.clone()])
        .chain(
            store
                .manifest(&a)
                .unwrap()
                .layers()
                .iter()
                .map(|l| Digest::parse(l.digest().as_ref()).unwrap()),
        )
        .collect();

    // Untagging one name keeps what the others use.
    store.remove("a:1").unwrap();
    assert!(a_blobs.iter().all(|d| store.has_blob(d)) && a_dirs[0].is_dir());
    assert!(matches!(store.find("a:1"), Err(StoreError::NotFound(_))));
    // Removing by id drops every name of that image, then its blobs and unpacked layer.
    store.remove(&a.config.hex()[..10]).unwrap();
    assert_eq!(names(&store), ["docker.io/library/small:1"]);
    assert!(
        a_blobs.iter().all(|d| !store.has_blob(d)),
        "blobs of the removed image collected"
    );
    assert!(!a_dirs[0].exists(), "its unpacked layer collected");
    assert!(
        s_dirs[0].is_dir() && store.has_blob(&s.config),
        "the other image untouched"
    );

    // A blob written but not yet named is pinned by its live Store; prune leaves it until that Store goes.
    let loose = store.put_blob_bytes(b"nothing refers to this").unwrap();
    let stray_layer = store.root().join("layers").join("0".repeat(64));
    fs::create_dir_all(stray_layer.join("x")).unwrap();
    let report = store.prune().unwrap();
    assert_eq!(
        (report.blobs_removed, report.layers_removed),
        (0, 1),
        "{report:?}"
    );
    assert!(store.has_blob(&loose) && !stray_layer.exists());
    drop(store);
    let store = t.store();
    let report = store.prune().unwrap();
    assert_eq!(report.blobs_removed, 1, "{report:?}");
    assert_eq!(report.bytes_freed, 22);
    assert!(!store.has_blob(&loose));
    assert_eq!(
        store.prune().unwrap(),
        Default::default(),
        "nothing left to collect"
    );
    store.remove("small:1").unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(files(&store.layout().join("blobs/sha256")), Vec::<String>::new());
    assert_eq!(files(&store.root().join("layers")), Vec::<String>::new());
    assert!(matches!(store.remove("small:1"), Err(StoreError::NotFound(_))));
}

#[test]
fn set_name_ids_and_ambiguity() {
    let t = TempDir::new("names");
    let (store, a) = store_with_busybox(&t, "base");
    let m = store.manifest(&a).unwrap();
    let layer = &m.layers()[0];
    let diff_ids = store.config(&a).unwrap().rootfs().diff_ids().clone();
    // Configs until two ids share their first hex digit, each named through set_name.
    let mut seen: Vec<Digest> = Vec::new();
    let collision = loop {
        let cfg = json!({
            "architecture": "amd64", "os": "linux", "created": format!("2020-01-01T00:00:{:02}Z", seen.len()),
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let cfg = serde_json::to_vec(&cfg).unwrap();
        let c = store.put_blob_bytes(&cfg).unwrap();
        let man = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": cfg.len() },
            "layers": [{ "mediaType": layer.media_type().to_string(), "digest": layer.digest().to_string(), "size": layer.size() }],
        });
        let man = serde_json::to_vec(&man).unwrap();
        let md = store.put_blob_bytes(&man).unwrap();
        store
            .set_name(
                &format!("crafted:{}", seen.len()),
                &md,
                OCI_MANIFEST,
                man.len() as u64,
            )
            .unwrap();
        if let Some(prev) = seen
            .iter()
            .find(|p| p.hex()[..1] == c.hex()[..1] && **p != a.config)
        {
            break (prev.clone(), c);
        }
        seen.push(c);
    };
    let shared = &collision.0.hex()[..1];
    assert!(
        matches!(store.find(shared), Err(StoreError::Ambiguous(_))),
        "prefix {shared}"
    );
    assert_eq!(store.find(&collision.1.hex()[..20]).unwrap().config, collision.1);
    assert_eq!(
        store.find("crafted:0").unwrap().created.as_deref(),
        Some("2020-01-01T00:00:00Z")
    );

    // set_name refuses a manifest whose blobs are not all there, and a name that is not one.
    let before = store.list().unwrap();
    let missing = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(b"no").to_string(), "size": 2 },
        "layers": [],
    });
    let missing = serde_json::to_vec(&missing).unwrap();
    let md = store.put_blob_bytes(&missing).unwrap();
    let e = store
        .set_name("incomplete:1", &md, OCI_MANIFEST, missing.len() as u64)
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Image docker.io/library/incomplete:1 is incomplete: blob sha256:"),
        "{e}"
    );
    let e = store
        .set_name("in valid", &a.manifest, OCI_MANIFEST, 1)
        .unwrap_err();
    assert!(e.to_string().starts_with("Invalid image reference"), "{e}");
    assert!(store
        .set_name("x", &Digest::of(b"absent"), OCI_MANIFEST, 1)
        .is_err());
    assert_eq!(store.list().unwrap(), before);
}

#[test]
fn a_damaged_image_is_named_in_errors_and_can_be_removed() {
    let t = TempDir::new("damaged");
    let (store, a) = store_with_busybox(&t, "good");
    let d = store
        .import_rootfs(
            &t.path("rootfs"),
            "victim",
            ImportConfig {
                cmd: vec!["x".into()],
                ..Default::default()
            },
        )
        .unwrap();
    assert_ne!(d.config, a.config);
    // Both share the layer: corrupt it, and both are damaged at save and unpack time.
    let layer = Digest::parse(store.manifest(&d).unwrap().layers()[0].digest().as_ref()).unwrap();
    let p = store.blob_path(&layer);
    let mut bytes = fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&p, &bytes).unwrap();
    let e = store
        .save(&["victim"], &t.path("out.tar"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("docker.io/library/victim:latest is damaged") && e.contains("digest mismatch"),
        "{e}"
    );
    assert!(
        !t.path("out.tar").exists() && files(&t.0).iter().all(|f| !f.contains("out.tar")),
        "no partial archive"
    );
    let e = store.layer_dirs(&d).unwrap_err().to_string();
    assert!(e.contains("docker.io/library/victim:latest is damaged"), "{e}");
    bytes[mid] ^= 0xff;
    fs::write(&p, &bytes).unwrap();

    // A corrupt config: list names the image; remove by name still works, then all is well again.
    fs::write(store.blob_path(&d.config), b"{broken").unwrap();
    let e = store.list().unwrap_err().to_string();
    assert!(
        e.starts_with("Image docker.io/library/victim:latest is damaged: Blob digest mismatch"),
        "{e}"
    );
    let e = store.prune().unwrap_err().to_string();
    assert!(e.contains("victim"), "{e}");
    store.remove("victim").unwrap();
    assert_eq!(names(&store), ["docker.io/library/good:latest"]);
    assert!(store.layer_dirs(&a).unwrap()[0].join("bin/busybox").is_file());
    let report = store.prune().unwrap();
    assert_eq!(report.blobs_removed, 0, "remove already collected: {report:?}");
    assert!(!store.has_blob(&d.config));
    let idx: Value = serde_json::from_slice(&fs::read(store.layout().join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn docker_schema2_manifests_and_manifest_lists() {
    use vessel_image::store::{DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};
    let t = TempDir::new("docker-types");
    let (store, base) = store_with_busybox(&t, "base");
    let m = store.manifest(&base).unwrap();
    let layer = &m.layers()[0];
    let config_size = store.blob_size(&base.config).unwrap();
    let s2 = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "size": config_size, "digest": base.config.to_string() },
        "layers": [{ "mediaType": DOCKER_LAYER_GZIP, "size": layer.size(), "digest": layer.digest().to_string() }],
    }))
    .unwrap();
    let s2_digest = store.put_blob_bytes(&s2).unwrap();
    store
        .set_name("docker/s2:1", &s2_digest, DOCKER_MANIFEST, s2.len() as u64)
        .unwrap();
    // A manifest list with a platform that was never copied, and ours.
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            { "mediaType": DOCKER_MANIFEST, "size": 7, "digest": Digest::of(b"arm64").to_string(),
              "platform": { "architecture": "arm64", "os": "linux" } },
            { "mediaType": DOCKER_MANIFEST, "size": s2.len(), "digest": s2_digest.to_string(),
              "platform": { "architecture": "amd64", "os": "linux" } },
        ],
    }))
    .unwrap();
    let list_digest = store.put_blob_bytes(&list).unwrap();
    store
        .set_name(
            "docker/list:1",
            &list_digest,
            DOCKER_MANIFEST_LIST,
            list.len() as u64,
        )
        .unwrap();

    for name in ["docker/s2:1", "docker/list:1"] {
        let img = store.find(name).unwrap();
        assert_eq!((&img.manifest, &img.config), (&s2_digest, &base.config), "{name}");
        assert_eq!(
            store.manifest(&img).unwrap().layers()[0].media_type().to_string(),
            DOCKER_LAYER_GZIP
        );
        assert!(
            store.layer_dirs(&img).unwrap()[0].join("bin/busybox").is_file(),
            "{name}"
        );
    }
    assert_eq!(
        store
            .find(&format!("docker/list@{list_digest}"))
            .unwrap()
            .manifest,
        s2_digest
    );

    // Saved and loaded into another store, and read by skopeo.
    let saved = t.path("saved.tar");
    store.save(&["docker/list:1", "docker/s2:1"], &saved).unwrap();
    let other = TempDir::new("docker-types-dest");
    let dest = other.store();
    let loaded = dest.load(&saved).unwrap();
    assert_eq!(
        loaded.iter().map(|r| &r.name).collect::<Vec<_>>(),
        ["docker.io/docker/list:1", "docker.io/docker/s2:1"]
    );
    assert!(loaded
        .iter()
        .all(|r| r.manifest == s2_digest && r.config == base.config));
    // skopeo 1.9 only sees OCI-typed descriptors in an OCI layout's index.json, but reads the docker half.
    let out = run(Command::new("skopeo").args([
        "inspect",
        &format!("docker-archive:{}:docker.io/docker/s2:1", saved.display()),
    ]));
    assert!(out.contains("\"Architecture\": \"amd64\""), "{out}");

    // Removing both names collects the list and the docker manifest, not what "base" uses.
    store.remove("docker/list:1").unwrap();
    assert!(!store.has_blob(&list_digest) && store.has_blob(&s2_digest));
    store.remove("docker/s2:1").unwrap();
    assert!(!store.has_blob(&s2_digest) && store.has_blob(&base.config));
    assert!(store.layer_dirs(&base).unwrap()[0].is_dir());
}
