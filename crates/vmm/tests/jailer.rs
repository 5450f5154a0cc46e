//! vessel-jailer as root on this host: a hand-made guest runs to power-off in the jail; the
//! jailed VMM runs as the given uid and gid with no capabilities, as PID 2 of its own PID
//! namespace, in its own mount and network namespaces, in the jail's cgroups with the limits
//! written, and sees only the jail's files; the jail's cgroups and the files the jailer made are
//! gone afterwards; bad input gets one line and leaves nothing behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use vessel_vmm::handmade::{elf_kernel, power_off, print, spin};
use vessel_vmm::kvm::Flavour;

const UID: u32 = 65534;
const GID: u32 = 65534;

/// A chroot base and a parent cgroup of this test process's own, removed at the end.
struct Fixture {
    base: PathBuf,
    parent: String,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let tag = format!("{name}-{}", std::process::id());
        let base = std::env::temp_dir().join(format!("vessel-jailer-{tag}"));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        Fixture {
            base,
            parent: format!("vessel-test-{tag}"),
        }
    }

    fn root(&self, id: &str) -> PathBuf {
        self.base.join("vessel-vmm").join(id).join("root")
    }

    /// Puts a guest into the jail's root before the start, as a user would.
    fn place_guest(&self, id: &str, code: &[u8]) {
        let root = self.root(id);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("guest"), elf_kernel(code)).unwrap();
    }

    fn jailer(&self, id: &str, extra: &[&str], vmm_args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel-jailer"));
        cmd.args(["--id", id, "--exec-file", env!("CARGO_BIN_EXE_vessel-vmm")])
            .args(["--uid", &UID.to_string(), "--gid", &GID.to_string()])
            .arg("--chroot-base")
            .arg(&self.base)
            .args(["--parent-cgroup", &self.parent])
            .args(extra)
            .arg("--")
            .args(["--kernel", "/guest", "--memory", "32"])
            .args(vmm_args)
            .stdin(Stdio::null());
        if Flavour::detect() == Flavour::Pvm {
            cmd.arg("--pvm-guest-kernel");
        }
        cmd
    }

    /// The jail's cgroup directories that exist, across hierarchies.
    fn cgroups(&self, id: &str) -> Vec<PathBuf> {
        cgroup_mounts()
            .into_iter()
            .map(|m| m.join(&self.parent).join(id))
            .filter(|d| d.exists())
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
        for mount in cgroup_mounts() {
            let _ = std::fs::remove_dir(mount.join(&self.parent));
        }
    }
}

fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if stat_field(child, 2) == pid.to_string() {
            found.push(child);
        }
    }
    found
}

/// The jailed VMM's host PID: the jailer's grandchild, once it runs the VMM with its filters.
fn jailed_vmm(jailer: &Child) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for pid1 in children_of(jailer.id()) {
            for vmm in children_of(pid1) {
                let status = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap_or_default();
                if status.contains("Name:\tvessel-vmm") && status.contains("Seccomp:\t2") {
                    return vmm;
                }
            }
        }
        assert!(Instant::now() < deadline, "no jailed vessel-vmm appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn namespace(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

#[test]
fn a_jailed_guest_runs_to_power_off_and_the_jail_is_cleaned_up() {
    let fx = Fixture::new("poweroff");
    fx.place_guest("vm1", &[print(b"hello from the jail\n"), power_off()].concat());
    let out = fx
        .jailer("vm1", &["--cgroup", "pids.max=64"], &["--serial", "stdio"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the jail\n");
    assert!(stderr(&out).contains("guest powered off"), "{}", stderr(&out));
    // The jailer's own files and the cgroups are gone; the user's guest stays.
    let root = fx.root("vm1");
    let left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["guest"]);
    assert_eq!(fx.cgroups("vm1"), Vec::<PathBuf>::new());
}

#[test]
fn the_jailed_vmm_is_unprivileged_namespaced_limited_and_sees_only_the_jail() {
    let fx = Fixture::new("inside");
    fx.place_guest("vm2", &spin());
    // pids and memory are v1 controllers here, hugetlb is on cgroup v2 (this host is hybrid).
    let limits = [
        "--cgroup",
        "pids.max=77",
        "--cgroup",
        "memory.limit_in_bytes=268435456",
        "--cgroup",
        "hugetlb.2MB.max=0",
    ];
    let mut jailer = fx
        .jailer("vm2", &limits, &["--serial", "none", "--api-sock", "/api.sock"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let vmm = jailed_vmm(&jailer);

    assert_eq!(status_field(vmm, "Uid"), format!("{UID} {UID} {UID} {UID}"));
    assert_eq!(status_field(vmm, "Gid"), format!("{GID} {GID} {GID} {GID}"));
    assert_eq!(status_field(vmm, "Groups"), "");
    for caps in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(vmm, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(vmm, "NoNewPrivs"), "1");
    // PID 2 of its own PID namespace (the jail's PID 1 is the jailer's child).
    assert_eq!(status_field(vmm, "NSpid"), format!("{vmm} 2"));
    for kind in ["pid", "mnt", "net"] {
        assert_ne!(
            namespace(&vmm.to_string(), kind),
            namespace("self", kind),
            "{kind} namespace"
        );
    }

    // In the jail's cgroups, with the limits written.
    let cgroups = std::fs::read_to_string(format!("/proc/{vmm}/cgroup")).unwrap();
    let inside = format!("/{}/vm2", fx.parent);
    for hierarchy in ["pids", "memory", ""] {
        let line = format!(":{hierarchy}:{inside}\n");
        let line = if hierarchy.is_empty() {
            format!("0::{inside}\n")
        } else {
            line
        };
        assert!(cgroups.contains(&line), "{line:?} in {cgroups}");
    }
    let read = |path: String| std::fs::read_to_string(path).unwrap().trim().to_owned();
    assert_eq!(read(format!("/sys/fs/cgroup/pids{inside}/pids.max")), "77");
    assert_eq!(
        read(format!("/sys/fs/cgroup/memory{inside}/memory.limit_in_bytes")),
        "268435456"
    );
    assert_eq!(
        read(format!("/sys/fs/cgroup/unified{inside}/hugetlb.2MB.max")),
        "0"
    );

    // Its root is the jail: the VMM, the device nodes, the guest and the API socket, no more.
    let root = PathBuf::from(format!("/proc/{vmm}/root"));
    let mut seen: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    seen.sort();
    // A dynamically linked (debug) build also brings its loader and libraries.
    seen.retain(|name| !matches!(name.as_str(), "lib" | "lib64" | "usr"));
    assert_eq!(seen, ["api.sock", "dev", "guest", "vessel-vmm"]);
    let kvm = std::fs::metadata(root.join("dev/kvm")).unwrap();
    assert_eq!(
        (kvm.uid(), kvm.gid(), kvm.rdev()),
        (UID, GID, libc::makedev(10, 232))
    );

    // SIGTERM to the jailer reaches the VMM; the jailer passes on how it ended and cleans up.
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(jailer.id() as i32, libc::SIGTERM) };
    let status = jailer.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert_eq!(fx.cgroups("vm2"), Vec::<PathBuf>::new());
    assert!(!fx.root("vm2").join("dev").exists());
}

#[test]
fn bad_input_gets_one_line_and_leaves_nothing_behind() {
    let fx = Fixture::new("bad");
    let check = |mut cmd: Command, id: &str, needle: &str| {
        let out = cmd.output().unwrap();
        let err = stderr(&out);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(
            err.starts_with("vessel-jailer: ") && err.contains(needle),
            "{needle:?} in {err:?}"
        );
        assert!(
            !fx.base.join("vessel-vmm").join(id).exists(),
            "{id}: directory left"
        );
        assert!(!fx.base.join("vessel-vmm").exists(), "{id}: directory left");
        assert_eq!(fx.cgroups(id), Vec::<PathBuf>::new(), "{id}: cgroup left");
    };
    let mut missing = Command::new(env!("CARGO_BIN_EXE_vessel-jailer"));
    missing
        .args([
            "--id",
            "vm3",
            "--exec-file",
            "/nonexistent/vessel-vmm",
            "--uid",
            "1",
            "--gid",
            "1",
        ])
        .arg("--chroot-base")
        .arg(&fx.base);
    check(missing, "vm3", "/nonexistent/vessel-vmm");
    check(fx.jailer("a/b", &[], &[]), "a/b", "Invalid jail id");
    let mut bad_uid = fx.jailer("vm4", &[], &[]);
    bad_uid.args(["--uid", "nobody"]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel-jailer"));
    cmd.args([
        "--id",
        "vm4",
        "--exec-file",
        env!("CARGO_BIN_EXE_vessel-vmm"),
        "--uid",
        "nobody",
    ])
    .args(["--gid", "1", "--chroot-base"])
    .arg(&fx.base);
    check(cmd, "vm4", "Invalid --uid \"nobody\"");
    check(
        fx.jailer("vm5", &["--cgroup", "nosuch.max=1"], &[]),
        "vm5",
        "nosuch",
    );
    check(
        fx.jailer("vm6", &["--cgroup", "pids.max"], &[]),
        "vm6",
        "--cgroup",
    );
}

#[test]
fn remove_cleans_up_after_a_killed_jailer() {
    let fx = Fixture::new("remove");
    fx.place_guest("vm7", &spin());
    let mut jailer = fx
        .jailer("vm7", &["--cgroup", "pids.max=50"], &["--serial", "none"])
        .spawn()
        .unwrap();
    let vmm = jailed_vmm(&jailer);
    jailer.kill().unwrap();
    jailer.wait().unwrap();
    // The jail dies with its jailer (parent-death signal on its PID 1).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{vmm}")).exists() {
        assert!(Instant::now() < deadline, "the jailed VMM outlived its jailer");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!fx.cgroups("vm7").is_empty());
    let out = Command::new(env!("CARGO_BIN_EXE_vessel-jailer"))
        .args([
            "--remove",
            "--id",
            "vm7",
            "--parent-cgroup",
            &fx.parent,
            "--chroot-base",
        ])
        .arg(&fx.base)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fx.cgroups("vm7"), Vec::<PathBuf>::new());
    assert!(!fx.base.join("vessel-vmm").join("vm7").exists());
}

#[test]
fn a_given_network_namespace_is_joined_and_its_tap_used() {
    let fx = Fixture::new("netns");
    let netns = format!("vessel-jailer-test-{}", std::process::id());
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
    };
    ip(&["netns", "add", &netns]);
    let _delete = NetnsGuard(netns.clone());
    // The VMM has no CAP_NET_ADMIN in the jail: its tap is made beforehand, owned by its uid.
    let (uid, gid) = (UID.to_string(), GID.to_string());
    ip(&[
        "-n", &netns, "tuntap", "add", "dev", "jtap0", "mode", "tap", "user", &uid, "group", &gid, "vnet_hdr",
    ]);
    fx.place_guest("vm8", &spin());
    let path = format!("/var/run/netns/{netns}");
    let vmm_args = [
        "--serial",
        "none",
        "--net",
        "tap=jtap0",
        "--vsock",
        "cid=3,path=/v.sock",
    ];
    let mut jailer = fx.jailer("vm8", &["--netns", &path], &vmm_args).spawn().unwrap();
    let vmm = jailed_vmm(&jailer);
    let joined = namespace(&vmm.to_string(), "net");
    let inode = std::fs::metadata(&path).unwrap().ino();
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(jailer.id() as i32, libc::SIGTERM) };
    let status = jailer.wait().unwrap();
    assert_eq!(joined, PathBuf::from(format!("net:[{inode}]")));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

/// Deletes the test's network namespace however the test ends.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Field `index` (1 = state, 2 = ppid, 4 = session, ...) of /proc/PID/stat after the command
/// (which may hold spaces: the split is after the last ')'); empty for a process that is gone.
fn stat_field(pid: u32, index: usize) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(index - 1))
        .unwrap_or_default()
        .to_owned()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn daemonized_the_jailer_answers_at_once_runs_the_vm_detached_and_still_cleans_up() {
    let fx = Fixture::new("daemon");
    fx.place_guest("vm6", &[print(b"up\n"), spin()].concat());
    let out = fx
        .jailer(
            "vm6",
            &["--daemonize", "--cgroup", "pids.max=64"],
            &["--serial", "file:/serial.log"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");

    // The VM runs on after the caller got its answer.
    let serial = fx.root("vm6").join("serial.log");
    wait_until("the guest's output", || {
        std::fs::read(&serial).is_ok_and(|s| s == b"up\n")
    });
    let jail_cgroup = fx.cgroups("vm6").into_iter().next().expect("the jail's cgroup");
    let procs = std::fs::read_to_string(jail_cgroup.join("cgroup.procs")).unwrap();
    let pids: Vec<u32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    let vmm = *pids
        .iter()
        .find(|&&p| status_field(p, "Name") == "vessel-vmm")
        .unwrap_or_else(|| panic!("no vessel-vmm among {pids:?}"));
    // The daemon is the jail init's parent: in a session of its own, its streams on /dev/null.
    let init: u32 = stat_field(vmm, 2).parse().unwrap();
    let daemon: u32 = stat_field(init, 2).parse().unwrap();
    assert_eq!(status_field(daemon, "Name"), "vessel-jailer");
    assert_eq!(
        stat_field(daemon, 4),
        daemon.to_string(),
        "the daemon leads its session"
    );
    assert_ne!(
        stat_field(daemon, 4),
        stat_field(std::process::id(), 4),
        "the daemon left the caller's session"
    );
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{daemon}/fd/{fd}")).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
    }

    // When the VM ends, the daemon cleans up as the foreground jailer does.
    // SAFETY: a plain kill(2) of the jailed VMM, a process this test's jailer started.
    assert_eq!(unsafe { libc::kill(vmm as i32, libc::SIGKILL) }, 0);
    wait_until("the jail's cgroups removed", || fx.cgroups("vm6").is_empty());
    wait_until("the daemon's end", || {
        !Path::new(&format!("/proc/{daemon}")).exists() || stat_field(daemon, 1) == "Z"
    });
    let mut left: Vec<String> = std::fs::read_dir(fx.root("vm6"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["guest", "serial.log"],
        "only the user's guest and the VM's output stay"
    );
}
