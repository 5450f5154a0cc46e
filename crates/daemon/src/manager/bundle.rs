//! An instance's OCI runtime config, from its [`InstanceConfig`] over the image's config: command, env,
//! user, limits, capabilities, mounts, the cgroup under the daemon's parent.

use std::path::Path;

use oci_spec::image::ImageConfiguration;
use serde_json::{json, Value};
use vessel_api::{InstanceConfig, Limits};

/// What docker and podman give a container unless told otherwise.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// The reaper `--init` runs as PID 1: Debian's static tini (package tini), bind-mounted read-only.
pub const INIT_BINARY: &str = "/usr/bin/tini-static";
/// Where the reaper appears in the instance.
const INIT_IN_INSTANCE: &str = "/sbin/vessel-init";

/// The smallest memory limit a container can start under (the runtime's set-up itself needs more than a
/// few pages); docker's minimum is 6 MiB.
pub const MIN_MEMORY: i64 = 6 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("Image {0} has no command: give one after the image name")]
    NoCommand(String),
    #[error("User {0:?} is not in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("Group {0:?} is not in the image's /etc/group")]
    UnknownGroup(String),
    #[error("Invalid environment variable {0:?}: use KEY=VALUE with a non-empty KEY")]
    BadEnv(String),
    #[error("Invalid limit: {0}")]
    BadLimit(String),
    #[error("Unknown capability {0:?}")]
    BadCapability(String),
    #[error("Invalid ulimit {0:?}: use a name such as nofile, nproc or core, with soft <= hard")]
    BadUlimit(String),
    #[error("Invalid tmpfs mount {0:?}: use an absolute PATH or PATH:OPTIONS")]
    BadTmpfs(String),
    #[error("--init needs {INIT_BINARY} on the host (apt-get install tini)")]
    NoInit,
    #[error(
        "Invalid volume {0:?}: use HOST_PATH:CONTAINER_PATH[:ro], both absolute, the host path existing"
    )]
    BadVolume(String),
    #[error("Invalid userns {0:?}: use host or auto")]
    BadUserns(String),
}

/// A bind mount as `-v` writes it: (host path, container path, read-only).
pub fn parse_volume(v: &str) -> Result<(&str, &str, bool), BundleError> {
    let bad = || BundleError::BadVolume(v.to_string());
    let mut parts = v.split(':');
    let (host, dest) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
    let ro = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(_) => return Err(bad()),
    };
    if parts.next().is_some() || !host.starts_with('/') || !dest.starts_with('/') || !Path::new(host).exists()
    {
        return Err(bad());
    }
    Ok((host, dest, ro))
}

/// Checks what can be checked without the image: env, limits, capabilities, ulimits, tmpfs, restart policy.
pub fn validate(c: &InstanceConfig) -> Result<(), BundleError> {
    for kv in &c.env {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(BundleError::BadEnv(kv.clone())),
        }
    }
    validate_limits(&c.limits)?;
    for cap in c.cap_add.iter().chain(&c.cap_drop) {
        if cap.eq_ignore_ascii_case("ALL") {
            continue;
        }
        let name = cap_name(cap);
        if name.parse::<caps_name::Capability>().is_err() {
            return Err(BundleError::BadCapability(cap.clone()));
        }
    }
    for u in &c.ulimits {
        if rlimit_name(&u.name).is_none() || u.soft > u.hard {
            return Err(BundleError::BadUlimit(format!(
                "{}={}:{}",
                u.name, u.soft, u.hard
            )));
        }
    }
    for t in &c.tmpfs {
        if !t.starts_with('/') {
            return Err(BundleError::BadTmpfs(t.clone()));
        }
    }
    for v in &c.volumes {
        parse_volume(v)?;
    }
    if let Some(u) = &c.userns {
        if u != "host" && u != "auto" {
            return Err(BundleError::BadUserns(u.clone()));
        }
    }
    if c.init && !Path::new(INIT_BINARY).exists() {
        return Err(BundleError::NoInit);
    }
    Ok(())
}

/// Names capabilities the way the `caps` crate parses them.
mod caps_name {
    pub use caps::Capability;
}

pub fn validate_limits(l: &Limits) -> Result<(), BundleError> {
    if let Some(m) = l.memory {
        if m < MIN_MEMORY {
            return Err(BundleError::BadLimit(format!(
                "memory {m} bytes is below the minimum of {} MiB",
                MIN_MEMORY >> 20
            )));
        }
    }
    if let (Some(swap), m) = (l.memory_swap, l.memory) {
        if swap != -1 && m.is_none_or(|m| swap < m) {
            return Err(BundleError::BadLimit(
                "memory-swap must be at least the memory limit (and needs one), or -1".into(),
            ));
        }
    }
    if let Some(c) = l.cpus {
        let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if !(c > 0.0 && c <= online) {
            return Err(BundleError::BadLimit(format!(
                "cpus {c}: use a number above 0 and at most {online} (this host's CPUs)"
            )));
        }
    }
    if let Some(s) = l.cpu_shares {
        if !(2..=262_144).contains(&s) {
            return Err(BundleError::BadLimit(format!("cpu-shares {s}: use 2 to 262144")));
        }
    }
    if let Some(p) = l.pids {
        if p == 0 || p < -1 {
            return Err(BundleError::BadLimit(format!(
                "pids {p}: use a positive number or -1"
            )));
        }
    }
    if let Some(w) = l.blkio_weight {
        if !(10..=1000).contains(&w) {
            return Err(BundleError::BadLimit(format!("blkio-weight {w}: use 10 to 1000")));
        }
    }
    for rates in throttles(l).into_iter().flat_map(|(_, r)| r) {
        block_device(&rates.path)?;
    }
    if let Some(cpus) = &l.cpuset_cpus {
        let ok = !cpus.is_empty()
            && cpus.split(',').all(|part| {
                let mut ends = part.splitn(2, '-');
                ends.all(|n| n.trim().parse::<u32>().is_ok())
            });
        if !ok {
            return Err(BundleError::BadLimit(format!(
                "cpuset-cpus {cpus:?}: use a list such as 0-1 or 0,2"
            )));
        }
    }
    Ok(())
}

fn cap_name(s: &str) -> String {
    let up = s.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

fn rlimit_name(name: &str) -> Option<String> {
    const KNOWN: &[&str] = &[
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    let n = name.to_ascii_lowercase();
    KNOWN
        .contains(&n.as_str())
        .then(|| format!("RLIMIT_{}", n.to_ascii_uppercase()))
}

/// The OCI `linux.resources` for limits (also what `update` applies live).
pub fn resources(l: &Limits) -> Value {
    let mut r = json!({});
    if l.memory.is_some() || l.memory_swap.is_some() {
        let mut m = json!({});
        if let Some(v) = l.memory {
            m["limit"] = json!(v);
        }
        if let Some(v) = l.memory_swap {
            m["swap"] = json!(v);
        }
        r["memory"] = m;
    }
    let mut cpu = json!({});
    if let Some(c) = l.cpus {
        cpu["quota"] = json!((c * 100_000.0) as i64);
        cpu["period"] = json!(100_000);
    }
    if let Some(s) = l.cpu_shares {
        cpu["shares"] = json!(s);
    }
    if let Some(s) = &l.cpuset_cpus {
        cpu["cpus"] = json!(s);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        r["cpu"] = cpu;
    }
    if let Some(p) = l.pids {
        r["pids"] = json!({ "limit": p });
    }
    let mut io = json!({});
    if let Some(w) = l.blkio_weight {
        io["weight"] = json!(w);
    }
    for (key, rates) in throttles(l) {
        // Checked at validation; a device gone since then is left out rather than failing a start.
        let list: Vec<Value> = rates
            .iter()
            .filter_map(|d| {
                let (major, minor) = block_device(&d.path).ok()?;
                Some(json!({ "major": major, "minor": minor, "rate": d.rate }))
            })
            .collect();
        io[key] = json!(list);
    }
    if io.as_object().is_some_and(|o| !o.is_empty()) {
        r["blockIO"] = io;
    }
    r
}

/// The throttle lists a limit sets, under their OCI names.
fn throttles(l: &Limits) -> Vec<(&'static str, &Vec<vessel_api::DeviceRate>)> {
    [
        ("throttleReadBpsDevice", &l.device_read_bps),
        ("throttleWriteBpsDevice", &l.device_write_bps),
        ("throttleReadIOPSDevice", &l.device_read_iops),
        ("throttleWriteIOPSDevice", &l.device_write_iops),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect()
}

/// A whole block device's (major, minor): throttles apply to disks, not partitions.
pub fn block_device(path: &str) -> Result<(u64, u64), BundleError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let bad = |why: &str| BundleError::BadLimit(format!("device {path:?}: {why}"));
    let md = std::fs::metadata(path).map_err(|e| bad(&e.to_string()))?;
    if !md.file_type().is_block_device() {
        return Err(bad("not a block device"));
    }
    let (major, minor) = (libc::major(md.rdev()) as u64, libc::minor(md.rdev()) as u64);
    if Path::new(&format!("/sys/dev/block/{major}:{minor}/partition")).exists() {
        return Err(bad("a partition: throttle its whole disk"));
    }
    Ok((major, minor))
}

/// The instance's hostname: its own, else the first 12 digits of its id (docker's way).
pub fn hostname(c: &InstanceConfig, id: &str) -> String {
    c.hostname
        .clone()
        .unwrap_or_else(|| id.chars().take(12).collect())
}

/// An instance's network as its config.json sees it.
pub struct NetSetup {
    /// The kept network namespace to join; `None`: the host's network.
    pub netns: Option<std::path::PathBuf>,
    /// (destination, host file) pairs bind-mounted read-only: /etc/hosts, resolv.conf, hostname.
    pub files: Vec<(String, std::path::PathBuf)>,
}

/// The process an instance runs, its config over its image's: what a container's config.json and a VM's
/// guest agent get alike.
pub struct ProcessParts {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    pub cwd: String,
    /// (RLIMIT_NAME, soft, hard)
    pub rlimits: Vec<(String, u64, u64)>,
}

/// `rootfs` is where the image's /etc/passwd and /etc/group are read to resolve a user name.
pub fn process_parts(
    c: &InstanceConfig,
    id: &str,
    image: &ImageConfiguration,
    rootfs: &Path,
) -> Result<ProcessParts, BundleError> {
    let ic = image.config().clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &c.entrypoint {
        Some(e) => e.clone(),
        None => ic.entrypoint().clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if c.command.is_empty() {
        ic.cmd().clone().unwrap_or_default()
    } else {
        c.command.clone()
    };
    let mut args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(BundleError::NoCommand(c.image.clone()));
    }
    if c.init {
        // tini as PID 1: it reaps orphans and passes signals on to the command (-g: to its process group).
        args.splice(0..0, [INIT_IN_INSTANCE.to_string(), "-g".into(), "--".into()]);
    }
    let mut env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    let mut set = |kv: &str| {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.to_string());
    };
    for kv in ic.env().iter().flatten() {
        set(kv);
    }
    let hostname = hostname(c, id);
    set(&format!("HOSTNAME={hostname}"));
    if c.tty {
        set("TERM=xterm");
    }
    for kv in &c.env {
        set(kv);
    }
    let user = c
        .user
        .clone()
        .or_else(|| ic.user().clone())
        .filter(|u| !u.is_empty());
    let (uid, gid) = match &user {
        Some(u) => resolve_user(u, rootfs)?,
        None => (0, 0),
    };
    let cwd = c
        .workdir
        .clone()
        .or_else(|| ic.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let mut rlimits = vec![("RLIMIT_NOFILE".to_string(), 1024, 1024)];
    for u in &c.ulimits {
        let Some(kind) = rlimit_name(&u.name) else {
            return Err(BundleError::BadUlimit(u.name.clone()));
        };
        rlimits.retain(|r| r.0 != kind);
        rlimits.push((kind, u.soft, u.hard));
    }
    Ok(ProcessParts {
        args,
        env,
        hostname,
        uid,
        gid,
        cwd,
        rlimits,
    })
}

/// The full config.json of an instance whose root filesystem is mounted at `rootfs`.
#[allow(clippy::too_many_arguments)]
pub fn runtime_config(
    c: &InstanceConfig,
    id: &str,
    name: &str,
    image: &ImageConfiguration,
    rootfs: &Path,
    cgroup_path: &str,
    idmap: Option<vessel_api::IdMap>,
    net: &NetSetup,
) -> Result<Value, BundleError> {
    let ProcessParts {
        args,
        env,
        hostname,
        uid,
        gid,
        cwd,
        rlimits,
    } = process_parts(c, id, image, rootfs)?;
    let caps = capabilities(&c.cap_add, &c.cap_drop);
    let rlimits: Vec<Value> = rlimits
        .iter()
        .map(|(kind, soft, hard)| json!({ "type": kind, "soft": soft, "hard": hard }))
        .collect();

    let mut spec = vessel_runtime::spec::default_spec();
    spec["root"] = json!({ "path": rootfs, "readonly": c.read_only });
    spec["hostname"] = json!(hostname);
    let mut annotations = serde_json::Map::new();
    annotations.insert("io.vessel.image".into(), json!(c.image));
    annotations.insert("io.vessel.name".into(), json!(name));
    for (k, v) in &c.labels {
        annotations.insert(k.clone(), json!(v));
    }
    spec["annotations"] = Value::Object(annotations);
    let p = &mut spec["process"];
    p["terminal"] = json!(c.tty);
    p["args"] = json!(args);
    p["env"] = json!(env);
    p["cwd"] = json!(cwd);
    p["user"] = json!({ "uid": uid, "gid": gid });
    p["noNewPrivileges"] = json!(false);
    p["capabilities"] = json!({ "bounding": caps, "effective": caps, "permitted": caps });
    p["rlimits"] = json!(rlimits);
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        if c.init {
            mounts.push(
                json!({ "destination": INIT_IN_INSTANCE, "type": "bind", "source": INIT_BINARY,
                "options": ["bind", "ro", "nosuid", "nodev"] }),
            );
        }
        for t in &c.tmpfs {
            let (dest, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
            let mut options = vec!["nosuid", "nodev", "noexec"];
            options.extend(opts.split(',').filter(|o| !o.is_empty()));
            mounts
                .push(json!({ "destination": dest, "type": "tmpfs", "source": "tmpfs", "options": options }));
        }
        for (dest, source) in &net.files {
            mounts.push(json!({ "destination": dest, "type": "bind", "source": source,
                "options": ["bind", "ro", "nosuid", "nodev", "noexec"] }));
        }
        for v in &c.volumes {
            let (host, dest, ro) = parse_volume(v)?;
            let mode = if ro { "ro" } else { "rw" };
            mounts.push(json!({ "destination": dest, "type": "bind", "source": host,
                "options": ["rbind", mode, "nosuid", "nodev"] }));
        }
    }
    let linux = &mut spec["linux"];
    if let Some(ns) = linux["namespaces"].as_array_mut() {
        match &net.netns {
            Some(path) => {
                for n in ns.iter_mut().filter(|n| n["type"] == "network") {
                    n["path"] = json!(path);
                }
            }
            None => ns.retain(|n| n["type"] != "network"),
        }
    }
    if let Some(m) = idmap {
        // Its own user namespace: root inside is host uid m.uid, with no privilege over the host's files.
        if let Some(ns) = linux["namespaces"].as_array_mut() {
            ns.push(json!({ "type": "user" }));
        }
        linux["uidMappings"] = json!([{ "containerID": 0, "hostID": m.uid, "size": m.size }]);
        linux["gidMappings"] = json!([{ "containerID": 0, "hostID": m.gid, "size": m.size }]);
    }
    linux["cgroupsPath"] = json!(cgroup_path);
    let mut res = resources(&c.limits);
    res["devices"] = json!([{ "allow": false, "access": "rwm" }]);
    linux["resources"] = res;
    Ok(spec)
}

/// The default set with `add` and `drop` applied (ALL allowed in either), docker's way.
fn capabilities(add: &[String], drop: &[String]) -> Vec<String> {
    let all = || caps::all().into_iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let mut set: Vec<String> = if drop.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
        Vec::new()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if add.iter().any(|a| a.eq_ignore_ascii_case("ALL")) {
        set = all();
    }
    for a in add.iter().filter(|a| !a.eq_ignore_ascii_case("ALL")) {
        let n = cap_name(a);
        if !set.contains(&n) {
            set.push(n);
        }
    }
    for d in drop.iter().filter(|d| !d.eq_ignore_ascii_case("ALL")) {
        let n = cap_name(d);
        set.retain(|c| *c != n);
    }
    set.sort();
    set
}

/// Resolve USER[:GROUP] (names through the image's /etc/passwd and /etc/group) to numbers.
pub fn resolve_user(spec: &str, rootfs: &Path) -> Result<(u32, u32), BundleError> {
    let (user, group) = spec
        .split_once(':')
        .map(|(u, g)| (u, Some(g)))
        .unwrap_or((spec, None));
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let field = |line: &str, i: usize| line.split(':').nth(i).map(str::to_string);
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => {
            let gid = passwd
                .lines()
                .find(|l| field(l, 2).as_deref() == Some(user))
                .and_then(|l| field(l, 3)?.parse().ok());
            (n, gid.unwrap_or(n))
        }
        Err(_) => passwd
            .lines()
            .find(|l| field(l, 0).as_deref() == Some(user))
            .and_then(|l| Some((field(l, 2)?.parse().ok()?, field(l, 3)?.parse().ok()?)))
            .ok_or_else(|| BundleError::UnknownUser(user.into()))?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .lines()
                .find(|l| field(l, 0).as_deref() == Some(g))
                .and_then(|l| field(l, 2)?.parse().ok())
                .ok_or_else(|| BundleError::UnknownGroup(g.into()))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_add_and_drop_like_docker() {
        let c = capabilities(&["net_admin".into()], &["CAP_CHOWN".into()]);
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        let c = capabilities(&["KILL".into()], &["ALL".into()]);
        assert_eq!(c, ["CAP_KILL"]);
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        let bad = |f: fn(&mut InstanceConfig)| {
            let mut c = InstanceConfig {
                image: "x".into(),
                ..Default::default()
            };
            f(&mut c);
            validate(&c).unwrap_err().to_string()
        };
        assert!(bad(|c| c.env = vec!["=x".into()]).contains("\"=x\""));
        assert!(bad(|c| c.limits.memory = Some(1024)).contains("minimum of 6 MiB"));
        assert!(bad(|c| c.limits.cpus = Some(0.0)).contains("cpus"));
        assert!(bad(|c| c.cap_add = vec!["FLY".into()]).contains("FLY"));
        assert!(bad(|c| c.tmpfs = vec!["run".into()]).contains("tmpfs"));
        assert!(bad(|c| c.limits.cpuset_cpus = Some("a".into())).contains("cpuset"));
    }
}
