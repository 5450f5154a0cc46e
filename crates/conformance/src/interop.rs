//! Interop harness: real podman and containerd driving `vessel-runtime`.
//!
//! No image registry is reachable here, so the test image is made locally from busybox-static: one
//! uncompressed layer built in Rust ([`rootfs_layer`]), fed to `podman import` or wrapped in an OCI
//! archive ([`write_oci_archive`]) for `ctr images import`.
//!
//! The engines are pointed at a [`RuntimeWrapper`]: a two-line shell script that appends its argv to a
//! log and execs vessel-runtime, so a test proves (rather than assumes) which runtime ran its containers.
//!
//! Every engine gets private state in temp dirs and is cleaned up by a `Drop` guard, even when a test
//! panics: [`Podman`] (own storage, lock files, cgroup parent, runtime state) and [`Containerd`] (own
//! daemon, socket, namespace, runc root; one daemon shared by the tests of a test binary that overlap).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::pty::PtyMaster;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::bundle::{APPLETS, BUSYBOX};
use crate::runtime::{require_root, run_bounded, vessel_binary, Out};
use crate::tempdir::TempDir;
use crate::{host, next_counter, wait_until};

/// The name both engines know the test image by.
pub const IMAGE: &str = "localhost/vessel-busybox:latest";

/// Bound on one engine command (podman, ctr).
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);

/// Applets the interop tests need beyond the conformance rootfs's [`APPLETS`].
const EXTRA_APPLETS: &[&str] = &["tty", "chown"];

/// The absolute path of `name` on PATH (or in /usr/sbin, /sbin); panics naming the package to install.
pub fn require_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (not on PATH): install it with scripts/test-deps.sh")
        })
}

/// Runs `cmd` (stdin from /dev/null) bounded by [`ENGINE_TIMEOUT`].
pub fn run_cmd(cmd: Command) -> Out {
    run_bounded(cmd, ENGINE_TIMEOUT).0
}

/// A unique token for names of this process's objects: `<pid>-<n>`.
pub fn unique() -> String {
    format!("{}-{}", std::process::id(), next_counter())
}

// ----- the image -----

/// The busybox rootfs as an uncompressed tar layer: busybox-static, applet symlinks, `/etc/passwd`
/// and `/etc/group` (root, test = 1000:1000, nobody), and the usual empty directories. Entries have
/// fixed times, so the layer (and the image digest) is the same on every run.
pub fn rootfs_layer() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("Cannot read {BUSYBOX}: {e} (install busybox-static: scripts/test-deps.sh)")
    });
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "proc", "sys", "dev", "root", "home", "var", "run"] {
        append(&mut b, d, Entry::Dir(0o755, 0));
    }
    append(&mut b, "tmp", Entry::Dir(0o1777, 0));
    append(&mut b, "home/test", Entry::Dir(0o755, 1000));
    append(&mut b, "bin/busybox", Entry::File(0o755, &busybox));
    let applets: BTreeSet<&str> = APPLETS.iter().chain(EXTRA_APPLETS).copied().collect();
    for a in applets {
        append(&mut b, &format!("bin/{a}"), Entry::Link("busybox"));
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\n\
                  test:x:1000:1000:test:/home/test:/bin/sh\n\
                  nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = "root:x:0:\ntty:x:5:\ntest:x:1000:\nnogroup:x:65534:\n";
    append(&mut b, "etc/passwd", Entry::File(0o644, passwd.as_bytes()));
    append(&mut b, "etc/group", Entry::File(0o644, group.as_bytes()));
    b.into_inner().expect("finish tar")
}

/// One entry of a layer: a directory (mode, owner), a root-owned file (mode, content) or a symlink.
enum Entry<'a> {
    Dir(u32, u64),
    File(u32, &'a [u8]),
    Link(&'a str),
}

fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, entry: Entry) {
    let mut h = tar::Header::new_ustar();
    let (kind, mode, owner, data): (_, _, _, &[u8]) = match entry {
        Entry::Dir(mode, owner) => (tar::EntryType::Directory, mode, owner, &[]),
        Entry::File(mode, data) => (tar::EntryType::Regular, mode, 0, data),
        Entry::Link(target) => {
            h.set_link_name(target).expect("tar link name");
            (tar::EntryType::Symlink, 0o777, 0, &[])
        }
    };
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(owner);
    h.set_gid(owner);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    h.set_path(path).expect("tar path");
    h.set_cksum();
    b.append(&h, data).expect("append to tar");
}

fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes an OCI image-layout archive (tar) holding [`rootfs_layer`] as image `name`, named for
/// `ctr images import` by the `io.containerd.image.name` annotation.
pub fn write_oci_archive(path: &Path, name: &str) {
    let layer = rootfs_layer();
    let layer_digest = sha256_digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "vessel-conformance interop::write_oci_archive"}]
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(&config),
            "size": config.len()
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len()
        }]
    }))
    .unwrap();
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_digest(&manifest),
            "size": manifest.len(),
            "platform": {"architecture": oci_arch(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag
            }
        }]
    }))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).expect("append to tar");
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    for blob in [&layer, &config, &manifest] {
        let d = sha256_digest(blob);
        add(format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), blob);
    }
    let bytes = b.into_inner().expect("finish tar");
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("Cannot write {}: {e}", path.display()));
}

// ----- the runtime wrapper -----

/// A script that logs each invocation (`argv` joined by spaces, one line each) and execs
/// vessel-runtime, optionally with a fixed `--root`.
pub struct RuntimeWrapper {
    dir: TempDir,
    bin: PathBuf,
    state_root: Option<PathBuf>,
}

/// Global options of a runc-compatible CLI that take a value.
const GLOBAL_WITH_VALUE: &[&str] = &["--root", "--log", "--log-format", "--criu", "--rootless"];

impl RuntimeWrapper {
    /// With `private_root`, the wrapper passes `--root <tempdir>/state` so the containers' state stays
    /// out of /run/vessel-runtime (for engines that pass no `--root` themselves, like podman).
    pub fn new(private_root: bool) -> RuntimeWrapper {
        let dir = TempDir::new("wrapper");
        let bin = std::fs::canonicalize(vessel_binary()).expect("canonical vessel-runtime path");
        let mut version = Command::new(&bin);
        version.arg("--version");
        let v = run_bounded(version, Duration::from_secs(10)).0;
        assert!(
            v.success() && v.stdout.starts_with("vessel-runtime "),
            "{} is not vessel-runtime (its --version):\n{v}",
            bin.display()
        );
        let state_root = private_root.then(|| dir.path().join("state"));
        let root_arg = match &state_root {
            Some(r) => format!("--root '{}' ", r.display()),
            None => String::new(),
        };
        let w = RuntimeWrapper { dir, bin, state_root };
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' {root_arg}\"$@\"\n",
            w.log_path().display(),
            w.bin.display()
        );
        std::fs::write(w.path(), script).expect("write wrapper script");
        std::fs::set_permissions(w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        w
    }

    /// The script to give the engine as its runtime.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("vessel-runtime-wrapper")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("invocations.log")
    }

    /// Every logged invocation, oldest first.
    pub fn invocations(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The subcommand of each invocation (global options skipped; `--version` counts as one).
    pub fn verbs(&self) -> Vec<String> {
        self.invocations().iter().filter_map(|l| verb_of(l)).collect()
    }

    /// Waits up to `timeout` until the log holds each of `verbs`, in this order (others may come
    /// between); panics with the whole log if it does not.
    pub fn wait_for_verbs(&self, verbs: &[&str], timeout: Duration) {
        let found = wait_until(timeout, || is_subsequence(verbs, &self.verbs()));
        assert!(
            found,
            "vessel-runtime was not invoked with {verbs:?} (in that order) within {timeout:?}; \
             invocations logged by {}:\n{}",
            self.path().display(),
            self.invocations().join("\n")
        );
    }

    /// The invocations that name container `id` (as a whole argument).
    pub fn invocations_for(&self, id: &str) -> Vec<String> {
        self.invocations()
            .into_iter()
            .filter(|l| l.split(' ').any(|a| a == id))
            .collect()
    }

    /// Asserts that the invocations naming container `id` include `verbs` in this order.
    pub fn assert_verbs_for(&self, id: &str, verbs: &[&str]) {
        let mine = self.invocations_for(id);
        let seen: Vec<String> = mine.iter().filter_map(|l| verb_of(l)).collect();
        assert!(
            is_subsequence(verbs, &seen),
            "vessel-runtime was not invoked with {verbs:?} (in that order) for container {id}; \
             its invocations:\n{}",
            mine.join("\n")
        );
    }

    /// Asserts that some invocation of `verb` has `needle` among its arguments.
    pub fn assert_invoked_with(&self, verb: &str, needle: &str) {
        let inv = self.invocations();
        assert!(
            inv.iter()
                .any(|l| verb_of(l).as_deref() == Some(verb) && l.split(' ').any(|a| a == needle)),
            "no `{verb}` invocation of vessel-runtime had argument {needle:?}; invocations:\n{}",
            inv.join("\n")
        );
    }

    /// The `--root` the wrapper adds, if any.
    pub fn state_root(&self) -> Option<&Path> {
        self.state_root.as_deref()
    }

    /// Runs vessel-runtime itself (not through the log) with `--root root` and `args`.
    pub fn vessel_at(&self, root: &Path, args: &[&str]) -> Out {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(root).args(args);
        run_bounded(c, Duration::from_secs(30)).0
    }

    /// `vessel-runtime --root ROOT state ID` parsed, or None if it fails.
    pub fn state_at(&self, root: &Path, id: &str) -> Option<Value> {
        let out = self.vessel_at(root, &["state", id]);
        out.success()
            .then(|| serde_json::from_str(&out.stdout).ok())
            .flatten()
    }

    /// Force-deletes every container left in `root` (cleanup).
    pub fn delete_all_at(&self, root: &Path) {
        let Ok(rd) = std::fs::read_dir(root) else {
            return;
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            eprintln!(
                "interop cleanup: force-deleting leftover container {id} in {}",
                root.display()
            );
            let _ = self.vessel_at(root, &["delete", "--force", &id]);
        }
    }
}

fn verb_of(line: &str) -> Option<String> {
    let mut it = line.split(' ').filter(|t| !t.is_empty());
    while let Some(t) = it.next() {
        if GLOBAL_WITH_VALUE.contains(&t) {
            it.next();
        } else if t == "--version" || t == "-v" || !t.starts_with('-') {
            return Some(t.to_string());
        }
    }
    None
}

fn is_subsequence(wanted: &[&str], seen: &[String]) -> bool {
    let mut it = seen.iter();
    wanted.iter().all(|w| it.any(|s| s == w))
}

// ----- cgroups -----

/// Removes the cgroup `/abs_path` and everything below it in every hierarchy (children first),
/// retrying while exiting processes still hold it. Never touches a hierarchy's root.
pub fn remove_cgroup_tree(abs_path: &str) {
    let rel = abs_path.trim_matches('/');
    assert!(
        !rel.is_empty() && !rel.split('/').any(|c| c == ".." || c == "."),
        "refusing to remove cgroup {abs_path:?}"
    );
    for d in host::cgroup_dirs_for(&format!("/{rel}")) {
        remove_cgroup_dir(&d);
    }
}

fn remove_cgroup_dir(d: &Path) {
    if !d.is_dir() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_dir(&e.path());
            }
        }
    }
    let gone = wait_until(Duration::from_secs(5), || {
        std::fs::remove_dir(d).is_ok() || !d.exists()
    });
    if !gone {
        eprintln!("interop cleanup: cannot remove cgroup {}", d.display());
    }
}

// ----- podman -----

/// A podman with private storage (`--root`, `--runroot`, `--tmpdir` with file locks, its own
/// containers.conf and storage.conf), cgroupfs under a private cgroup parent, and vessel-runtime
/// (through a [`RuntimeWrapper`] with a private `--root`) as its OCI runtime. [`IMAGE`] is imported
/// on creation. Dropping it removes its containers, their cgroups and all its files.
pub struct Podman {
    dir: TempDir,
    bin: PathBuf,
    wrapper: RuntimeWrapper,
    cgroup_parent: String,
}

impl Podman {
    pub fn new() -> Podman {
        require_root();
        let bin = require_tool("podman");
        require_tool("conmon");
        let dir = TempDir::new("podman");
        for d in ["root", "runroot", "tmp", "networks"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let p = Podman {
            cgroup_parent: format!("/vessel-interop-podman-{}", unique()),
            wrapper: RuntimeWrapper::new(true),
            bin,
            dir,
        };
        std::fs::write(
            p.dir.path().join("containers.conf"),
            format!(
                "[engine]\nlock_type = \"file\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 tmp_dir = \"{tmp}\"\nimage_copy_tmp_dir = \"{tmp}\"\n\
                 [network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{net}\"\n",
                tmp = p.path("tmp").display(),
                net = p.path("networks").display()
            ),
        )
        .unwrap();
        std::fs::write(
            p.dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                p.path("root").display(),
                p.path("runroot").display()
            ),
        )
        .unwrap();
        let layer = p.dir.path().join("rootfs.tar");
        std::fs::write(&layer, rootfs_layer()).unwrap();
        p.import(&layer);
        p
    }

    /// `podman import LAYER IMAGE`. podman 4.3 writes every image copy into the host's blob-info
    /// cache (/var/lib/containers/cache), whatever `--root` says, so the import runs in a private
    /// mount namespace with a tmpfs over /var/lib/containers (or /var/lib when that does not exist).
    fn import(&self, layer: &Path) {
        let podman = self.command(&["import", &layer.to_string_lossy(), IMAGE]);
        let hide = ["/var/lib/containers", "/var/lib"]
            .into_iter()
            .find(|d| Path::new(d).is_dir() && !self.dir.path().starts_with(d));
        let Some(hide) = hide else {
            run_cmd(podman).assert_ok("podman import of the busybox rootfs");
            return;
        };
        let mut c = Command::new(require_tool("unshare"));
        c.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg("mount -t tmpfs -o mode=0700,size=16m vessel-interop \"$0\" && exec \"$@\"")
            .arg(hide)
            .arg(podman.get_program())
            .args(podman.get_args());
        for (k, v) in podman.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        run_cmd(c).assert_ok("podman import of the busybox rootfs (in a private mount namespace)");
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// The wrapper podman runs as its runtime.
    pub fn wrapper(&self) -> &RuntimeWrapper {
        &self.wrapper
    }

    /// The `--cgroup-parent` of every container [`Podman::run_flags`] starts.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// `podman GLOBAL... ARGS...` with this instance's isolation options.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("TMPDIR", self.path("tmp"))
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("runroot"))
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .args(["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file", "--runtime"])
            .arg(self.wrapper.path())
            .args(args);
        c
    }

    /// Runs podman with `args`, bounded by [`ENGINE_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Out {
        run_cmd(self.command(args))
    }

    /// Like [`Podman::run`], asserting success.
    pub fn ok(&self, args: &[&str], what: &str) -> Out {
        let out = self.run(args);
        out.assert_ok(what);
        out
    }

    /// Options every `podman run` here needs: no network set-up, nofile/nproc within this host's hard
    /// limits, and the private cgroup parent.
    pub fn run_flags(&self) -> Vec<String> {
        [
            "--network",
            "none",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
            "--cgroup-parent",
            &self.cgroup_parent,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The argv of `podman run [mode...] FLAGS [extra...] IMAGE [cmd...]`.
    pub fn run_args(&self, mode: &[&str], extra: &[&str], cmd: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into()];
        v.extend(mode.iter().map(|s| s.to_string()));
        v.extend(self.run_flags());
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(IMAGE.into());
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    }

    /// `podman run --rm FLAGS [extra...] IMAGE cmd...` (not asserting success).
    pub fn run_rm(&self, extra: &[&str], cmd: &[&str]) -> Out {
        let args = self.run_args(&["--rm"], extra, cmd);
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `podman run -d FLAGS [extra...] IMAGE cmd...`: the container id.
    pub fn run_detached(&self, extra: &[&str], cmd: &[&str]) -> String {
        let args = self.run_args(&["-d"], extra, cmd);
        let out = self.ok(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            "podman run -d",
        );
        let id = out.stdout.trim().to_string();
        assert!(!id.is_empty(), "podman run -d printed no container id\n{out}");
        id
    }

    /// `podman inspect --format FORMAT ID`, trimmed.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        let out = self.ok(&["inspect", "--format", format, id], "podman inspect");
        out.stdout.trim().to_string()
    }

    /// vessel-runtime's own `state` of a podman container (from the wrapper's private root).
    pub fn vessel_state(&self, id: &str) -> Option<Value> {
        let root = self
            .wrapper
            .state_root()
            .expect("podman wrapper has a private root");
        self.wrapper.state_at(root, id)
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let out = run_bounded(
            self.command(&["rm", "--all", "--force", "--time", "0"]),
            Duration::from_secs(30),
        )
        .0;
        if !out.success() {
            eprintln!("interop cleanup: podman rm --all failed\n{out}");
        }
        if let Some(root) = self.wrapper.state_root() {
            self.wrapper.delete_all_at(root);
        }
        remove_cgroup_tree(&self.cgroup_parent);
        // `dir` goes next: TempDir detaches whatever podman left mounted in it before removing it.
    }
}

// ----- a pseudo-terminal for `-it` -----

/// A command running with a new pseudo-terminal as its stdin, stdout and stderr; everything it writes
/// is collected. The child is killed on drop if still running.
pub struct PtySession {
    child: Child,
    master: Arc<PtyMaster>,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl PtySession {
    pub fn spawn(mut cmd: Command) -> PtySession {
        // O_CLOEXEC: processes spawned meanwhile by parallel tests must not inherit either end.
        let master =
            nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).expect("posix_openpt");
        nix::pty::grantpt(&master).expect("grantpt");
        nix::pty::unlockpt(&master).expect("unlockpt");
        let name = nix::pty::ptsname_r(&master).expect("ptsname");
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .unwrap_or_else(|e| panic!("Cannot open pty {name}: {e}"));
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        let desc = format!("{cmd:?}");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
        drop(cmd); // closes the parent's copies of the slave: reads on the master end with EIO
        let master = Arc::new(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (m, o) = (Arc::clone(&master), Arc::clone(&output));
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match (&*m).read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => o.lock().unwrap().extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        });
        PtySession {
            child,
            master,
            output,
            reader: Some(reader),
        }
    }

    /// Everything read from the terminal so far.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits up to `timeout` for the transcript to satisfy `cond`; panics with the transcript if not.
    pub fn expect(&self, what: &str, timeout: Duration, cond: impl Fn(&str) -> bool) {
        let ok = wait_until(timeout, || cond(&self.transcript()));
        assert!(
            ok,
            "terminal: {what} not seen within {timeout:?}; transcript:\n{}",
            self.transcript()
        );
    }

    /// Types `text` on the terminal.
    pub fn send(&self, text: &str) {
        (&*self.master).write_all(text.as_bytes()).expect("write to pty");
    }

    /// Waits up to `timeout` for the command to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                if let Some(r) = self.reader.take() {
                    // The reader ends at EIO once the last slave holder exits; bounded anyway.
                    let _ = wait_until(Duration::from_secs(2), || r.is_finished());
                }
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ----- containerd -----

/// A private containerd 1.6 daemon: its own config, root, state, socket, runc root, fifo dir and
/// namespace (so its cgroups live under `/<namespace>`), with [`IMAGE`] imported from an OCI archive.
///
/// [`Containerd::shared`] gives the tests of one test binary the same daemon while they overlap; the
/// last one to drop its handle stops it. Dropping it removes its containers (and shims), stops the
/// daemon, and removes its cgroups and files.
pub struct Containerd {
    dir: TempDir,
    ctr: PathBuf,
    daemon: Mutex<Child>,
    namespace: String,
    wrapper: RuntimeWrapper,
}

static SHARED: Mutex<Weak<Containerd>> = Mutex::new(Weak::new());

impl Containerd {
    /// The daemon shared by the tests of this process that overlap in time (started if none runs).
    pub fn shared() -> Arc<Containerd> {
        let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = g.upgrade() {
            return c;
        }
        let c = Arc::new(Containerd::start());
        *g = Arc::downgrade(&c);
        c
    }

    /// Starts a new daemon and imports [`IMAGE`].
    pub fn start() -> Containerd {
        require_root();
        let bin = require_tool("containerd");
        let ctr = require_tool("ctr");
        require_tool("containerd-shim-runc-v2");
        let dir = TempDir::new("containerd");
        for d in ["root", "state", "opt", "runc", "fifo"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let p = |s: &str| dir.path().join(s).display().to_string();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = p("root"),
            state = p("state"),
            sock = p("containerd.sock"),
            opt = p("opt"),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = File::create(dir.path().join("containerd.log")).unwrap();
        let daemon = Command::new(bin)
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start containerd: {e}"));
        let c = Containerd {
            namespace: format!("vessel-interop-{}", unique()),
            wrapper: RuntimeWrapper::new(false),
            daemon: Mutex::new(daemon),
            ctr,
            dir,
        };
        let up = wait_until(Duration::from_secs(20), || {
            if c.daemon.lock().unwrap().try_wait().ok().flatten().is_some() {
                return true;
            }
            c.sock().exists() && c.ctr(&["version"]).success()
        });
        let exited = c.daemon.lock().unwrap().try_wait().ok().flatten();
        assert!(
            up && exited.is_none(),
            "containerd did not come up within 20 s (exit: {exited:?}); its log:\n{}",
            c.log()
        );
        let archive = c.dir.path().join("image.oci.tar");
        write_oci_archive(&archive, IMAGE);
        c.ctr_ok(
            &[
                "images",
                "import",
                "--snapshotter",
                "overlayfs",
                &archive.to_string_lossy(),
            ],
            "ctr images import of the busybox OCI archive",
        );
        c
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The wrapper given to the shim as its runc binary.
    pub fn wrapper(&self) -> &RuntimeWrapper {
        &self.wrapper
    }

    /// The runc root given to the shim; containers live in `<it>/<namespace>`.
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("runc").join(&self.namespace)
    }

    /// The directory for ctr's I/O fifos (`--fifo-dir`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// `ctr --address SOCK --namespace NS ARGS...`
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address")
            .arg(self.sock())
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Out {
        run_cmd(self.command(args))
    }

    pub fn ctr_ok(&self, args: &[&str], what: &str) -> Out {
        let out = self.ctr(args);
        assert!(
            out.success(),
            "{what}: expected success\n{out}\ncontainerd log:\n{}",
            self.log()
        );
        out
    }

    /// Options that make `ctr run` use vessel-runtime (through the wrapper) with private state.
    pub fn runtime_flags(&self) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            self.wrapper.path().display().to_string(),
            "--runc-root".into(),
            self.dir.path().join("runc").display().to_string(),
            "--fifo-dir".into(),
            self.fifo_dir().display().to_string(),
            "--snapshotter".into(),
            "overlayfs".into(),
        ]
    }

    /// `ctr run [mode...] RUNTIME-FLAGS IMAGE ID cmd...` (not asserting success).
    pub fn run(&self, mode: &[&str], id: &str, cmd: &[&str]) -> Out {
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(mode.iter().map(|s| s.to_string()));
        args.extend(self.runtime_flags());
        args.push(IMAGE.into());
        args.push(id.into());
        args.extend(cmd.iter().map(|s| s.to_string()));
        self.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// A fresh container id with a guard that removes the container (task included) on drop.
    pub fn container(&self, name: &str) -> CtrContainer<'_> {
        CtrContainer {
            ctrd: self,
            id: format!("{name}-{}", unique()),
        }
    }

    /// Removes a container and its task, whatever state they are in.
    fn remove(&self, id: &str) {
        let t = Duration::from_secs(20);
        let _ = run_bounded(self.command(&["task", "delete", "--force", id]), t);
        let _ = run_bounded(self.command(&["container", "delete", id]), t);
    }

    /// Shim processes serving this daemon (their argv names its socket), with the socket each one
    /// listens on: containerd 1.6 puts it at `/run/containerd/s/<sha256 of ADDRESS/NAMESPACE/ID>`.
    fn shims(&self) -> Vec<(i32, PathBuf)> {
        let sock = self.sock().display().to_string();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for pid in rd
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = argv
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let opt = |name: &str| args.iter().skip_while(|a| *a != name).nth(1).cloned();
            if !args
                .first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                || opt("-address").as_deref() != Some(sock.as_str())
            {
                continue;
            }
            let key = format!(
                "{sock}/{}/{}",
                opt("-namespace").unwrap_or_default(),
                opt("-id").unwrap_or_default()
            );
            let hex = sha256_digest(key.as_bytes())
                .trim_start_matches("sha256:")
                .to_string();
            v.push((pid, Path::new("/run/containerd/s").join(hex)));
        }
        v
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ids = run_bounded(
            self.command(&["container", "list", "--quiet"]),
            Duration::from_secs(20),
        )
        .0;
        for id in ids.stdout.split_whitespace() {
            eprintln!("interop cleanup: removing leftover containerd container {id}");
            self.remove(id);
        }
        let mut daemon = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if !wait_until(Duration::from_secs(10), || {
            daemon.try_wait().ok().flatten().is_some()
        }) {
            let _ = daemon.kill();
        }
        let _ = daemon.wait();
        for (pid, socket) in self.shims() {
            eprintln!(
                "interop cleanup: killing leftover shim {pid}, removing {}",
                socket.display()
            );
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let _ = std::fs::remove_file(socket);
        }
        self.wrapper.delete_all_at(&self.runtime_root());
        remove_cgroup_tree(&self.namespace);
    }
}

/// A containerd container id; the guard force-deletes its task and removes it on drop.
pub struct CtrContainer<'a> {
    ctrd: &'a Containerd,
    pub id: String,
}

impl Drop for CtrContainer<'_> {
    fn drop(&mut self) {
        let listed = self.ctrd.ctr(&["container", "list", "--quiet"]);
        if listed.stdout.split_whitespace().any(|i| i == self.id) {
            self.ctrd.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_verb_after_global_options() {
        let l = "--root /r/default --log /b/log.json --log-format json create --bundle /b x";
        assert_eq!(verb_of(l).as_deref(), Some("create"));
        assert_eq!(
            verb_of("--root /s --systemd-cgroup kill c 15").as_deref(),
            Some("kill")
        );
        assert_eq!(verb_of("--version").as_deref(), Some("--version"));
        assert_eq!(verb_of(""), None);
    }

    #[test]
    fn matches_verbs_in_order() {
        let seen: Vec<String> = ["create", "start", "state", "delete"].map(String::from).to_vec();
        assert!(is_subsequence(&["create", "delete"], &seen));
        assert!(!is_subsequence(&["delete", "create"], &seen));
        assert!(!is_subsequence(&["exec"], &seen));
    }

    #[test]
    fn layer_is_reproducible_and_has_the_applets() {
        let layer = rootfs_layer();
        assert_eq!(sha256_digest(&layer), sha256_digest(&rootfs_layer()));
        let mut ar = tar::Archive::new(layer.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/tty",
            "etc/passwd",
            "etc/group",
            "tmp",
        ] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == want),
                "{want} missing: {names:?}"
            );
        }
    }
}
