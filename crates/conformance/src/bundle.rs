//! OCI bundles: a busybox-static rootfs and a `config.json` built as JSON, with builder helpers.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::tempdir::TempDir;

/// Where busybox-static is taken from on the host.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked into every rootfs (busybox is also callable as `busybox <applet>`).
pub const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "echo", "sleep", "true", "false", "id", "hostname", "mount", "umount", "grep", "stat",
    "test", "[", "ps", "touch", "mkdir", "readlink", "pwd", "wc", "head", "tail", "tr", "env", "kill",
    "printf", "mknod", "ln", "rm", "sed", "awk", "cut", "sort", "uname", "sysctl", "mkfifo", "dd", "chmod",
    "whoami", "nproc", "sync", "cp", "mv", "seq", "xargs", "find",
];

/// The default cgroup parent of test containers (absolute form).
pub const CGROUP_PARENT: &str = "vessel-conformance";

/// A bundle directory: `rootfs/` plus the config that is written to `config.json` before each use.
pub struct Bundle {
    dir: TempDir,
    config: Value,
}

impl Default for Bundle {
    fn default() -> Self {
        Self::new()
    }
}

impl Bundle {
    /// A bundle with a busybox rootfs and [`default_config`], with a unique absolute `cgroupsPath`.
    pub fn new() -> Bundle {
        let dir = TempDir::new("bundle");
        let rootfs = dir.path().join("rootfs");
        populate_rootfs(&rootfs);
        let token = format!("b-{}-{}", std::process::id(), crate::next_counter());
        let mut config = default_config();
        config["linux"]["cgroupsPath"] = json!(format!("/{CGROUP_PARENT}/{token}"));
        Bundle { dir, config }
    }

    /// Absolute path of the bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Absolute path of `rootfs/`.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Host path of a path inside the rootfs (`/a/b` -> `<bundle>/rootfs/a/b`).
    pub fn host_path(&self, in_container: &str) -> PathBuf {
        self.rootfs().join(in_container.trim_start_matches('/'))
    }

    /// Host path of the rootfs's `/bin/sh`, for hooks (which run on the host).
    pub fn host_sh(&self) -> String {
        self.host_path("/bin/sh").to_string_lossy().into_owned()
    }

    pub fn config(&self) -> &Value {
        &self.config
    }

    pub fn config_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    /// Writes `config.json` from the current config.
    pub fn write_config(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialise config");
        self.write_raw_config(&text);
    }

    /// Writes arbitrary text as `config.json` (for malformed-input tests).
    pub fn write_raw_config(&self, text: &str) {
        let p = self.path().join("config.json");
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("Cannot write {}: {e}", p.display()));
    }

    /// Writes a file inside the rootfs, creating parent directories.
    pub fn write_file(&self, in_container: &str, content: &str) -> &Self {
        let p = self.host_path(in_container);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        self
    }

    /// Creates a directory (and parents) inside the rootfs.
    pub fn mkdir(&self, in_container: &str) -> &Self {
        std::fs::create_dir_all(self.host_path(in_container)).unwrap();
        self
    }

    /// The configured `linux.cgroupsPath`.
    pub fn cgroups_path(&self) -> String {
        self.config["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    // ----- builder helpers -----

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// `sh -c SCRIPT`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Adds `KEY=VALUE` to `process.env`.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        push(
            &mut self.config["process"]["env"],
            json!(format!("{key}={value}")),
        );
        self
    }

    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.config["process"]["cwd"] = json!(cwd);
        self
    }

    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.config["process"]["user"] = json!({"uid": uid, "gid": gid});
        self
    }

    pub fn additional_gids(&mut self, gids: &[u32]) -> &mut Self {
        self.config["process"]["user"]["additionalGids"] = json!(gids);
        self
    }

    pub fn umask(&mut self, umask: u32) -> &mut Self {
        self.config["process"]["user"]["umask"] = json!(umask);
        self
    }

    pub fn hostname(&mut self, name: &str) -> &mut Self {
        self.config["hostname"] = json!(name);
        self
    }

    pub fn remove_hostname(&mut self) -> &mut Self {
        remove(&mut self.config, "hostname");
        self
    }

    pub fn annotation(&mut self, key: &str, value: &str) -> &mut Self {
        if !self.config["annotations"].is_object() {
            self.config["annotations"] = json!({});
        }
        self.config["annotations"][key] = json!(value);
        self
    }

    /// Appends a mount.
    pub fn add_mount(&mut self, destination: &str, typ: &str, source: &str, options: &[&str]) -> &mut Self {
        let mut m = json!({"destination": destination, "source": source, "options": options});
        if !typ.is_empty() {
            m["type"] = json!(typ);
        }
        push(&mut self.config["mounts"], m);
        self
    }

    /// Replaces the whole mounts list.
    pub fn mounts(&mut self, mounts: Value) -> &mut Self {
        self.config["mounts"] = mounts;
        self
    }

    /// Keeps only the mounts whose destination satisfies `keep`.
    pub fn retain_mounts(&mut self, keep: impl Fn(&str) -> bool) -> &mut Self {
        if let Some(a) = self.config["mounts"].as_array_mut() {
            a.retain(|m| keep(m["destination"].as_str().unwrap_or("")));
        }
        self
    }

    /// Replaces the namespaces list with these types, none with a path.
    pub fn namespaces(&mut self, types: &[&str]) -> &mut Self {
        let v: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
        self.config["linux"]["namespaces"] = json!(v);
        self
    }

    /// Adds (or replaces) one namespace, optionally with a path to join.
    pub fn namespace(&mut self, typ: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(typ);
        let mut ns = json!({"type": typ});
        if let Some(p) = path {
            ns["path"] = json!(p);
        }
        push(&mut self.config["linux"]["namespaces"], ns);
        self
    }

    pub fn remove_namespace(&mut self, typ: &str) -> &mut Self {
        if let Some(a) = self.config["linux"]["namespaces"].as_array_mut() {
            a.retain(|n| n["type"] != typ);
        }
        self
    }

    pub fn uid_mappings(&mut self, container: u32, host: u32, size: u32) -> &mut Self {
        self.config["linux"]["uidMappings"] =
            json!([{"containerID": container, "hostID": host, "size": size}]);
        self
    }

    pub fn gid_mappings(&mut self, container: u32, host: u32, size: u32) -> &mut Self {
        self.config["linux"]["gidMappings"] =
            json!([{"containerID": container, "hostID": host, "size": size}]);
        self
    }

    /// Sets `linux.resources.<key>` (e.g. `"memory"`, `json!({"limit": ..})`).
    pub fn resource(&mut self, key: &str, value: Value) -> &mut Self {
        if !self.config["linux"]["resources"].is_object() {
            self.config["linux"]["resources"] = json!({});
        }
        self.config["linux"]["resources"][key] = value;
        self
    }

    pub fn cgroups_path_set(&mut self, path: &str) -> &mut Self {
        self.config["linux"]["cgroupsPath"] = json!(path);
        self
    }

    /// Replaces the default `cgroupsPath` with a unique relative one of a single level
    /// (`vessel-conformance-<token>`), so that deleting the container leaves no parent directory behind
    /// in the runtime's own cgroup.
    pub fn cgroups_path_relative(&mut self) -> &mut Self {
        let p = self.cgroups_path();
        let leaf = p.rsplit('/').next().unwrap_or_default().to_string();
        self.cgroups_path_set(&format!("{CGROUP_PARENT}-{leaf}"))
    }

    /// Appends a hook of `kind` (`prestart`, `createRuntime`, `createContainer`, `startContainer`,
    /// `poststart`, `poststop`).
    pub fn add_hook(&mut self, kind: &str, path: &str, args: &[&str], timeout: Option<u32>) -> &mut Self {
        let mut h = json!({"path": path, "args": args});
        if let Some(t) = timeout {
            h["timeout"] = json!(t);
        }
        if !self.config["hooks"].is_object() {
            self.config["hooks"] = json!({});
        }
        push(&mut self.config["hooks"][kind], h);
        self
    }

    /// Appends a host hook `sh -c SCRIPT` using the rootfs's busybox.
    pub fn add_sh_hook(&mut self, kind: &str, script: &str) -> &mut Self {
        let sh = self.host_sh();
        self.add_hook(kind, &sh, &["sh", "-c", script], Some(20))
    }

    pub fn masked_paths(&mut self, paths: &[&str]) -> &mut Self {
        self.config["linux"]["maskedPaths"] = json!(paths);
        self
    }

    pub fn add_masked_path(&mut self, path: &str) -> &mut Self {
        push(&mut self.config["linux"]["maskedPaths"], json!(path));
        self
    }

    pub fn readonly_paths(&mut self, paths: &[&str]) -> &mut Self {
        self.config["linux"]["readonlyPaths"] = json!(paths);
        self
    }

    pub fn add_readonly_path(&mut self, path: &str) -> &mut Self {
        push(&mut self.config["linux"]["readonlyPaths"], json!(path));
        self
    }

    /// Sets or replaces one rlimit.
    pub fn rlimit(&mut self, typ: &str, hard: u64, soft: u64) -> &mut Self {
        if let Some(a) = self.config["process"]["rlimits"].as_array_mut() {
            a.retain(|r| r["type"] != typ);
        }
        push(
            &mut self.config["process"]["rlimits"],
            json!({"type": typ, "hard": hard, "soft": soft}),
        );
        self
    }

    /// Sets bounding, effective and permitted to `caps`; inheritable and ambient to none.
    pub fn capabilities(&mut self, caps: &[&str]) -> &mut Self {
        self.config["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": [], "ambient": []
        });
        self
    }

    pub fn seccomp(&mut self, seccomp: Value) -> &mut Self {
        self.config["linux"]["seccomp"] = seccomp;
        self
    }

    pub fn sysctl(&mut self, key: &str, value: &str) -> &mut Self {
        if !self.config["linux"]["sysctl"].is_object() {
            self.config["linux"]["sysctl"] = json!({});
        }
        self.config["linux"]["sysctl"][key] = json!(value);
        self
    }

    pub fn root_readonly(&mut self, ro: bool) -> &mut Self {
        self.config["root"]["readonly"] = json!(ro);
        self
    }

    pub fn rootfs_propagation(&mut self, mode: &str) -> &mut Self {
        self.config["linux"]["rootfsPropagation"] = json!(mode);
        self
    }

    pub fn oom_score_adj(&mut self, v: i32) -> &mut Self {
        self.config["process"]["oomScoreAdj"] = json!(v);
        self
    }

    pub fn no_new_privileges(&mut self, v: bool) -> &mut Self {
        self.config["process"]["noNewPrivileges"] = json!(v);
        self
    }

    pub fn add_device(&mut self, device: Value) -> &mut Self {
        push(&mut self.config["linux"]["devices"], device);
        self
    }

    pub fn apparmor_profile(&mut self, profile: &str) -> &mut Self {
        self.config["process"]["apparmorProfile"] = json!(profile);
        self
    }

    pub fn mount_label(&mut self, label: &str) -> &mut Self {
        self.config["linux"]["mountLabel"] = json!(label);
        self
    }

    pub fn oci_version(&mut self, v: &str) -> &mut Self {
        self.config["ociVersion"] = json!(v);
        self
    }

    /// Removes a top-level key (e.g. `process`).
    pub fn remove_key(&mut self, key: &str) -> &mut Self {
        remove(&mut self.config, key);
        self
    }
}

fn push(slot: &mut Value, item: Value) {
    if !slot.is_array() {
        *slot = json!([]);
    }
    slot.as_array_mut().unwrap().push(item);
}

fn remove(v: &mut Value, key: &str) {
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
}

/// A config close to what `runc spec` generates, with `terminal: false`, a writable root, and no
/// `cgroupsPath` (a [`Bundle`] sets a unique one).
pub fn default_config() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "vessel-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Fills `rootfs` with busybox-static, applet links and minimal /etc files.
fn populate_rootfs(rootfs: &Path) {
    for d in [
        "bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/test",
        "var",
        "run",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::set_permissions(rootfs, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let _ = nix::unistd::chown(
        &rootfs.join("home/test"),
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(1000)),
    );
    let bb = rootfs.join("bin/busybox");
    std::fs::copy(BUSYBOX, &bb).unwrap_or_else(|e| {
        panic!(
            "Cannot copy {BUSYBOX} into the test rootfs: {e} (install busybox-static: scripts/test-deps.sh)"
        )
    });
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755)).unwrap();
    for a in APPLETS {
        symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         test:x:1000:1000:test:/home/test:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ntty:x:5:\ntest:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
}
