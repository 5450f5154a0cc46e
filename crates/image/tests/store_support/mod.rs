//! Helpers shared by the store tests: temp dirs, a busybox root filesystem, an isolated podman, and
//! running the real tools (skopeo, umoci, podman) with their output in the failure message.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use vessel_image::store::{ImageRecord, ImportConfig, Store};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

static N: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vessel-store-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    pub fn store(&self) -> Store {
        Store::open(&self.0.join("store")).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (podman, mounts, ownership)");
}

/// A minimal root filesystem: Debian's static busybox and its applets as symlinks, /etc/passwd, a hard link.
pub fn busybox_rootfs(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: apt-get install busybox-static (scripts/test-deps.sh)"
    );
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    let out = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/hostname"), "vessel\n").unwrap();
    fs::hard_link(dir.join("etc/hostname"), dir.join("etc/hostname.link")).unwrap();
}

/// A store in `t` holding the busybox rootfs as `name`.
pub fn store_with_busybox(t: &TempDir, name: &str) -> (Store, ImageRecord) {
    let rootfs = t.path("rootfs");
    if !rootfs.exists() {
        busybox_rootfs(&rootfs);
    }
    let store = t.store();
    let cfg = ImportConfig {
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    let image = store.import_rootfs(&rootfs, name, cfg).unwrap();
    (store, image)
}

pub fn names(store: &Store) -> Vec<String> {
    store.list().unwrap().into_iter().map(|i| i.name).collect()
}

/// Run a command; panic with its stderr if it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot start: {e} (scripts/test-deps.sh installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman with its own storage (vfs) under `dir`, so tests never touch the host's images.
pub struct Podman {
    root: PathBuf,
}

impl Podman {
    pub fn new(dir: &Path) -> Podman {
        require_root();
        Podman {
            root: dir.to_path_buf(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        let root = self.root.join("root").display().to_string();
        let runroot = self.root.join("runroot").display().to_string();
        c.args(["--root", &root, "--runroot", &runroot, "--storage-driver", "vfs"]);
        c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        c.args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["system", "reset", "-f"]).output();
    }
}

/// Files under `dir` (relative paths), sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}
