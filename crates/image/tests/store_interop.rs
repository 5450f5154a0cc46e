//! The store with the real tools: skopeo and umoci read and write its OCI layout; podman loads what `save`
//! writes, and `load` reads what podman saves (docker-archive, oci-archive, multi-image, gzip), including a
//! two-layer image podman built on ours.

mod store_support;

use std::fs;
use std::process::Command;

use serde_json::Value;
use store_support::*;
use vessel_image::store::Digest;

#[test]
fn skopeo_reads_our_layout_and_archives_and_writes_into_the_layout() {
    let t = TempDir::new("skopeo");
    let (store, image) = store_with_busybox(&t, "vessel/busybox:1");
    let layout = store.layout().display().to_string();
    let ours = format!("oci:{layout}:{}", image.name);

    let inspect: Value = serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &ours]))).unwrap();
    assert_eq!(
        (inspect["Architecture"].as_str(), inspect["Os"].as_str()),
        (Some("amd64"), Some("linux"))
    );
    assert_eq!(inspect["Digest"].as_str(), Some(image.manifest.as_str()));
    let raw = run(Command::new("skopeo").args(["inspect", "--config", "--raw", &ours]));
    assert_eq!(
        Digest::of(raw.as_bytes()),
        image.config,
        "skopeo sees our config, byte for byte"
    );

    // Out of our layout, and back in under another name: it shows up in list().
    let copy = t.path("copy");
    run(Command::new("skopeo").args(["copy", &ours, &format!("oci:{}:x", copy.display())]));
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:x", copy.display()),
        &format!("oci:{layout}:localhost/skopeo/copied:v1"),
    ]));
    let copied = store
        .find("localhost/skopeo/copied:v1")
        .expect("skopeo's write is in our index");
    assert_eq!(copied.config, image.config);
    assert!(names(&store).contains(&"localhost/skopeo/copied:v1".to_string()));
    assert!(store.layer_dirs(&copied).unwrap()[0]
        .join("bin/busybox")
        .is_file());

    // Both halves of what save writes: docker-archive and oci-archive.
    let saved = t.path("saved.tar");
    store.save(&["vessel/busybox:1"], &saved).unwrap();
    run(Command::new("skopeo").args([
        "copy",
        &format!("docker-archive:{}", saved.display()),
        &format!("oci:{layout}:localhost/from/docker-archive:1"),
    ]));
    let from_docker = store.find("localhost/from/docker-archive:1").unwrap();
    // skopeo re-serialises the config when it converts a docker image to OCI (podman keeps it: see below),
    // so compare content.
    let diff_ids = |r| store.config(r).unwrap().rootfs().diff_ids().clone();
    assert_eq!(diff_ids(&from_docker), diff_ids(&image));
    assert!(store.layer_dirs(&from_docker).unwrap()[0].join("bin/sh").exists());
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci-archive:{}:{}", saved.display(), image.name),
        &format!("oci:{layout}:localhost/from/oci-archive:1"),
    ]));
    assert_eq!(
        store.find("localhost/from/oci-archive:1").unwrap().manifest,
        image.manifest
    );

    // A layout skopeo wrote from scratch is a store too.
    let fresh = t.path("fresh");
    fs::create_dir_all(&fresh).unwrap();
    run(Command::new("skopeo").args([
        "copy",
        &ours,
        &format!("oci:{}/images:docker.io/library/fresh:1", fresh.display()),
    ]));
    let other = vessel_image::store::Store::open(&fresh).unwrap();
    assert_eq!(other.find("fresh:1").unwrap().config, image.config);
}

#[test]
fn umoci_unpacks_and_tags_our_images() {
    require_root();
    let t = TempDir::new("umoci");
    let (store, image) = store_with_busybox(&t, "vessel/busybox:1");
    let image_arg = format!("{}:{}", store.layout().display(), image.name);
    let stat = run(Command::new("umoci").args(["stat", "--image", &image_arg]));
    assert!(
        stat.contains("vessel image import"),
        "umoci stat shows our history: {stat}"
    );
    let bundle = t.path("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image_arg])
        .arg(&bundle));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert_eq!(
        fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
        std::path::Path::new("busybox")
    );
    let config: Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["process"]["args"][0], "sh",
        "our Cmd reached the runtime config"
    );
    run(Command::new("umoci").args(["tag", "--image", &image_arg, "localhost/umoci/tagged:2"]));
    let tagged = store
        .find("localhost/umoci/tagged:2")
        .expect("umoci's tag is in our index");
    assert_eq!(tagged.manifest, image.manifest);
    store.remove("vessel/busybox:1").unwrap();
    assert!(
        store.layer_dirs(&tagged).unwrap()[0]
            .join("bin/busybox")
            .is_file(),
        "still used by umoci's name"
    );
}

#[test]
fn podman_loads_our_saves_and_we_load_podman_saves() {
    let t = TempDir::new("podman");
    let (store, image) = store_with_busybox(&t, "vessel/busybox:1");
    store.tag("vessel/busybox:1", "localhost/also/busybox:2").unwrap();
    let podman = Podman::new(&t.path("podman"));

    // save → podman load: both names, our image id.
    let saved = t.path("saved.tar");
    store
        .save(&["vessel/busybox:1", "localhost/also/busybox:2"], &saved)
        .unwrap();
    let out = podman.run(&["load", "-i", &saved.display().to_string()]);
    assert!(
        out.contains("vessel/busybox:1") && out.contains("localhost/also/busybox:2"),
        "podman load: {out}"
    );
    let images = podman.run(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    for name in ["docker.io/vessel/busybox:1", "localhost/also/busybox:2"] {
        assert!(
            images.contains(&format!("{name} {}", image.config)),
            "{name} missing from podman images:\n{images}"
        );
    }

    // A second layer, built by podman on top of ours (COPY needs no runtime).
    let ctx = t.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello"), "hello from podman\n").unwrap();
    fs::write(
        ctx.join("Containerfile"),
        "FROM docker.io/vessel/busybox:1\nCOPY hello /hello\nENV BUILT=1\n",
    )
    .unwrap();
    podman.run(&[
        "build",
        "--pull=never",
        "-q",
        "-t",
        "localhost/two:1",
        &ctx.display().to_string(),
    ]);

    let base_dirs = store.layer_dirs(&image).unwrap();
    let formats: [(&str, &[&str]); 4] = [
        ("docker-archive", &["save", "--format", "docker-archive"]),
        ("oci-archive", &["save", "--format", "oci-archive"]),
        (
            "docker-archive, two images",
            &["save", "-m", "--format", "docker-archive"],
        ),
        ("gzip docker-archive", &["save", "--format", "docker-archive"]),
    ];
    for (i, (what, args)) in formats.iter().enumerate() {
        let file = t.path(&format!("podman-{i}.tar"));
        let mut a: Vec<&str> = args.to_vec();
        let path = file.display().to_string();
        a.extend(["-o", &path, "localhost/two:1"]);
        if what.contains("two images") {
            a.push("docker.io/vessel/busybox:1");
        }
        podman.run(&a);
        let file = if what.starts_with("gzip") {
            run(Command::new("gzip").arg("-f").arg(&file));
            t.path(&format!("podman-{i}.tar.gz"))
        } else {
            file
        };
        let loaded = store
            .load(&file)
            .unwrap_or_else(|e| panic!("load of podman's {what}: {e}"));
        let two = loaded
            .iter()
            .find(|r| r.name == "localhost/two:1")
            .unwrap_or_else(|| panic!("{what}: {loaded:?}"));
        let config = store.config(two).unwrap();
        assert!(config
            .config()
            .clone()
            .unwrap()
            .env()
            .clone()
            .unwrap()
            .contains(&"BUILT=1".to_string()));
        let dirs = store.layer_dirs(two).unwrap();
        assert_eq!(dirs.len(), 2, "{what}");
        assert_eq!(
            dirs[0], base_dirs[0],
            "{what}: the base layer is shared with our import, unpacked once"
        );
        assert_eq!(
            fs::read_to_string(dirs[1].join("hello")).unwrap(),
            "hello from podman\n",
            "{what}"
        );
        if what.contains("two images") {
            let base = loaded
                .iter()
                .find(|r| r.name == "docker.io/vessel/busybox:1")
                .expect("second image");
            assert_eq!(base.config, image.config, "the image id survives podman");
        }
    }
    // Loading the same archive again changes nothing.
    let before = store.list().unwrap();
    store.load(&t.path("podman-0.tar")).unwrap();
    assert_eq!(store.list().unwrap(), before);
}

#[test]
fn save_and_load_through_pipes() {
    let t = TempDir::new("pipes");
    let (store, image) = store_with_busybox(&t, "vessel/busybox:1");
    let fifo = t.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // save into a pipe (as `vessel save -o /dev/stdout | …`): written straight, no temp file beside it.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(&fifo).unwrap())
    };
    store.save(&[&image.name], &fifo).unwrap();
    let bytes = reader.join().unwrap();
    assert_eq!(files(&t.0), ["fifo", "rootfs", "store"]);
    // load from a pipe (`… | vessel load -i /dev/stdin`), gzip-compressed: read once, in order.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    let gz = gz.finish().unwrap();
    let other = TempDir::new("pipes-dest");
    let dest = other.store();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::write(&fifo, gz).unwrap())
    };
    let loaded = dest.load(&fifo).unwrap();
    writer.join().unwrap();
    assert_eq!(loaded, vec![image]);
}
