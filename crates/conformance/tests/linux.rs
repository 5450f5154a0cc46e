//! Linux-specific configuration: the default environment, devices, masked and read-only paths,
//! namespaces, id mappings, mounts and propagation, seccomp, sysctl, and the LSM labels.
//! Areas: default, linux_devices, linux_masked_paths, linux_mount_label, linux_ns_itype, linux_ns_nopath,
//! linux_ns_path, linux_ns_path_type, linux_process_apparmor_profile, linux_readonly_paths,
//! linux_rootfs_propagation, linux_seccomp, linux_sysctl, linux_uid_mappings, mounts.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vessel_conformance::caps::{cap_mask, parse_mask};
use vessel_conformance::host::{parse_mountinfo, MountInfo};
use vessel_conformance::*;

fn kv(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn mount_at<'a>(mounts: &'a [MountInfo], dest: &str) -> Option<&'a MountInfo> {
    mounts.iter().rev().find(|m| m.mount_point.to_str() == Some(dest))
}

/// A helper process in new namespaces (`unshare OPTS --fork sleep 60`), killed with its process group
/// on drop.
struct NsHelper {
    child: Child,
}

impl NsHelper {
    /// Starts `unshare <opts> sleep 60` and waits until its namespace `ns` differs from ours.
    fn new(opts: &[&str], ns: &str) -> NsHelper {
        let mut cmd = Command::new("unshare");
        cmd.args(opts)
            .args(["sleep", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .expect("cannot run unshare (util-linux): install it with scripts/test-deps.sh");
        let h = NsHelper { child };
        let mine = host::ns_link("self", ns);
        let ok = wait_until(Duration::from_secs(5), || {
            let l = h.ns_link(ns);
            l.is_some() && l != mine
        });
        assert!(ok, "unshare {opts:?} did not enter a new {ns} namespace");
        h
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The namespace link of the helper for `ns`; for `pid` it is `pid_for_children` (unshare --fork
    /// puts its child, not itself, in the new pid namespace).
    fn ns_link(&self, ns: &str) -> Option<String> {
        let n = if ns == "pid" { "pid_for_children" } else { ns };
        host::ns_link(&self.pid(), n)
    }

    fn ns_path(&self, ns: &str) -> String {
        let n = if ns == "pid" { "pid_for_children" } else { ns };
        format!("/proc/{}/ns/{n}", self.pid())
    }
}

impl Drop for NsHelper {
    fn drop(&mut self) {
        // The helper's own process group, created by process_group(0) above.
        let pgid = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the runtime inside a throw-away private mount namespace (held by a helper), so that a runtime
/// that mis-handles a test's mount-namespace setting cannot change the host's mounts. Returns the helper.
fn isolate_mounts(rt: &Runtime) -> NsHelper {
    let h = NsHelper::new(&["--mount", "--propagation", "private"], "mnt");
    let pid = h.pid();
    rt.set_wrapper(&["nsenter", "-t", &pid, "-m", "--"]);
    h
}

// The default config gives the standard environment: pid 1, hostname, the default devices and
// /dev symlinks, the standard filesystems, masked and read-only /proc paths, caps, rlimits, no_new_privs.
conformance!(default, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.sh(
        "echo pid=$$; echo hostname=$(hostname); echo uid=$(id -u); \
         for d in null zero full random urandom tty; do echo dev-$d=$(stat -c '%F %t:%T' /dev/$d); done; \
         echo ptmx=$(readlink /dev/ptmx || stat -c '%F %t:%T' /dev/ptmx); \
         for l in fd stdin stdout stderr; do echo link-$l=$(readlink /dev/$l); done; \
         echo kcore=$(cat /proc/kcore | wc -c); echo firmware=$(ls -A /sys/firmware | wc -l); \
         (echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && echo procsys=writable || echo procsys=readonly; \
         grep -E '^(CapBnd|CapEff|NoNewPrivs):' /proc/self/status | tr -d '\\t' | tr ':' '='; \
         echo nofile=$(ulimit -n); echo nofile-hard=$(ulimit -Hn); \
         echo ---; cat /proc/self/mountinfo",
    );
    let out = rt.run_ok(&b).stdout.clone();
    let (head, mounts) = out.split_once("---\n").unwrap_or((&out, ""));
    let m = kv(head);
    let get = |k: &str| m.get(k).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(get("pid"), "1", "{out}");
    assert_eq!(get("hostname"), "vessel-test");
    assert_eq!(get("uid"), "0");
    for (d, majmin) in [
        ("null", "1:3"),
        ("zero", "1:5"),
        ("full", "1:7"),
        ("random", "1:8"),
        ("urandom", "1:9"),
        ("tty", "5:0"),
    ] {
        assert_eq!(
            get(&format!("dev-{d}")),
            format!("character special file {majmin}"),
            "/dev/{d}\n{out}"
        );
    }
    let ptmx = get("ptmx");
    assert!(
        ptmx == "pts/ptmx" || ptmx == "/dev/pts/ptmx" || ptmx == "character special file 5:2",
        "/dev/ptmx: {ptmx}"
    );
    for (l, t) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        assert_eq!(get(&format!("link-{l}")), t, "/dev/{l}");
    }
    assert_eq!(get("kcore"), "0", "masked /proc/kcore is readable");
    assert_eq!(get("firmware"), "0", "masked /sys/firmware is not empty");
    assert_eq!(get("procsys"), "readonly", "/proc/sys is writable");
    let default_caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    assert_eq!(parse_mask(get("CapBnd")), cap_mask(&default_caps));
    assert_eq!(parse_mask(get("CapEff")), cap_mask(&default_caps));
    assert_eq!(get("NoNewPrivs"), "1");
    assert_eq!(get("nofile"), "1024");
    assert_eq!(get("nofile-hard"), "1024");

    let mi = parse_mountinfo(mounts);
    for (dest, fstype) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
    ] {
        let mnt = mount_at(&mi, dest).unwrap_or_else(|| panic!("{dest} not mounted:\n{mounts}"));
        assert_eq!(mnt.fstype, fstype, "{}", mnt.line);
        assert!(
            mnt.has_option("nosuid") || dest == "/proc",
            "{dest} not nosuid: {}",
            mnt.line
        );
    }
    assert!(
        mount_at(&mi, "/sys").unwrap().has_option("ro"),
        "/sys not read-only"
    );
    // The cgroup filesystems (cgroup2 at /sys/fs/cgroup, or v1 hierarchies below a tmpfs there) are
    // mounted read-only.
    let cgroup_fs: Vec<&MountInfo> = mi
        .iter()
        .filter(|m| m.mount_point.starts_with("/sys/fs/cgroup") && m.fstype.starts_with("cgroup"))
        .collect();
    assert!(
        !cgroup_fs.is_empty(),
        "no cgroup filesystem under /sys/fs/cgroup:\n{mounts}"
    );
    for m in cgroup_fs {
        assert!(m.has_option("ro"), "cgroup mount not read-only: {}", m.line);
    }
    assert!(mount_at(&mi, "/").is_some(), "no root mount:\n{mounts}");
});

// linux.devices: char, block and fifo nodes with the given numbers, mode and owner, parents created.
conformance!(linux_devices, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.add_device(json!({"path": "/dev/test1", "type": "c", "major": 10, "minor": 666, "fileMode": 432, "uid": 0, "gid": 0}))
        .add_device(json!({"path": "/dev/test2", "type": "b", "major": 8, "minor": 666, "fileMode": 416, "uid": 1000, "gid": 1000}))
        .add_device(json!({"path": "/dev/test3", "type": "p", "major": 8, "minor": 666, "fileMode": 432}))
        .add_device(json!({"path": "/dev/nested/test4", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0}));
    b.sh("stat -c '%n|%F|%t:%T|%a|%u:%g' /dev/test1 /dev/test2 /dev/test3 /dev/nested/test4 /dev/null");
    let out = rt.run_ok(&b).stdout.clone();
    let want = [
        "/dev/test1|character special file|a:29a|660|0:0",
        "/dev/test2|block special file|8:29a|640|1000:1000",
        "/dev/nested/test4|character special file|1:3|666|0:0",
        "/dev/null|character special file|1:3|666|0:0",
    ];
    for w in want {
        assert!(out.lines().any(|l| l == w), "missing {w:?} in:\n{out}");
    }
    let fifo = out
        .lines()
        .find(|l| l.starts_with("/dev/test3|"))
        .unwrap_or_default();
    assert!(
        fifo.starts_with("/dev/test3|fifo|") && fifo.contains("|660|"),
        "fifo: {fifo}"
    );
});

/// Files a path-restriction test puts in the rootfs before the run.
fn seed_paths(b: &Bundle, prefix: &str, content: &str) {
    b.mkdir(&format!("/{prefix}-dir/{prefix}-subdir"));
    for f in [
        format!("/{prefix}-file"),
        format!("/{prefix}-dir/{prefix}-file"),
        format!("/{prefix}-dir/{prefix}-subdir/{prefix}-file"),
        format!("/{prefix}-dir/{prefix}-subdir/tmp-file"),
    ] {
        b.write_file(&f, content);
    }
}

// maskedPaths: directories, files, nested ones and device nodes cannot be read; a missing path is
// ignored.
conformance!(linux_masked_paths, |rt: &Runtime| {
    let mut b = Bundle::new();
    seed_paths(&b, "masked", "secrets");
    let dev = b.host_path("/masked-dev");
    nix::sys::stat::mknod(
        &dev,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    for p in [
        "/masked-dir",
        "/masked-file",
        "/masked-dir/masked-subdir",
        "/masked-dir/masked-file",
        "/masked-dir/masked-subdir/masked-file",
        "/masked-dev",
        "/does-not-exist",
    ] {
        b.add_masked_path(p);
    }
    b.sh(
        "echo dir=$(ls -A /masked-dir | wc -l); \
         echo file=$(cat /masked-file 2>/dev/null); \
         echo sub=$(cat /masked-dir/masked-file /masked-dir/masked-subdir/masked-file /masked-dir/masked-subdir/tmp-file 2>/dev/null); \
         echo dev=$(head -c 4 /masked-dev 2>/dev/null | wc -c); \
         touch /masked-dir/new 2>/dev/null && echo dirwrite=yes || echo dirwrite=no",
    );
    let out = rt.run_ok(&b).stdout.clone();
    let m = kv(&out);
    let get = |k: &str| m.get(k).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(get("dir"), "0", "masked dir lists entries:\n{out}");
    assert_eq!(get("file"), "", "masked file readable:\n{out}");
    assert_eq!(get("sub"), "", "masked nested files readable:\n{out}");
    assert_eq!(get("dev"), "0", "masked device readable:\n{out}");
    assert_eq!(get("dirwrite"), "no", "masked dir writable:\n{out}");
    assert!(!out.contains("secrets"), "{out}");
});

// maskedPaths MUST be absolute: a relative one is an invalid config and MUST be rejected.
// runc 1.1 accepts it silently, so this fails on runc.
conformance!(
    linux_masked_paths_relative_rejected,
    runc_differs = "runc accepts relative masked paths; the spec requires absolute ones",
    |rt: &Runtime| {
        let mut b = Bundle::new();
        b.write_file("/masked-relpath", "secrets");
        b.add_masked_path("masked-relpath").args(&["true"]);
        let id = rt.new_id();
        let g = rt.guard(&id);
        rt.run(&b, &id).assert_fail("run with a relative masked path");
        drop(g);
        assert_nothing_left(rt, &b, "after a rejected config");
    }
);

// readonlyPaths: readable, not writable (directories, files, nested ones).
conformance!(linux_readonly_paths, |rt: &Runtime| {
    let mut b = Bundle::new();
    seed_paths(&b, "readonly", "immutable\n");
    for p in [
        "/readonly-dir",
        "/readonly-file",
        "/readonly-dir/readonly-subdir",
        "/readonly-dir/readonly-file",
        "/readonly-dir/readonly-subdir/readonly-file",
        "/does-not-exist",
    ] {
        b.add_readonly_path(p);
    }
    b.sh(
        "echo read=$(cat /readonly-file /readonly-dir/readonly-file /readonly-dir/readonly-subdir/readonly-file | tr '\\n' ' '); \
         for p in /readonly-file /readonly-dir/readonly-file /readonly-dir/readonly-subdir/readonly-file; do \
           (echo x >> $p) 2>/dev/null && echo write-$p=yes || echo write-$p=no; done; \
         touch /readonly-dir/new 2>/dev/null && echo newfile=yes || echo newfile=no; \
         touch /readonly-dir/readonly-subdir/new 2>/dev/null && echo newsub=yes || echo newsub=no; \
         touch /elsewhere && echo root=yes",
    );
    let out = rt.run_ok(&b).stdout.clone();
    let m = kv(&out);
    let get = |k: &str| m.get(k).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(get("read"), "immutable immutable immutable", "{out}");
    for p in [
        "/readonly-file",
        "/readonly-dir/readonly-file",
        "/readonly-dir/readonly-subdir/readonly-file",
    ] {
        assert_eq!(get(&format!("write-{p}")), "no", "{p} writable:\n{out}");
    }
    assert_eq!(get("newfile"), "no", "{out}");
    assert_eq!(get("newsub"), "no", "{out}");
    assert_eq!(
        get("root"),
        "yes",
        "the rest of the rootfs must stay writable:\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(b.host_path("/readonly-file")).unwrap(),
        "immutable\n"
    );
});

// readonlyPaths MUST be absolute; a relative one MUST be rejected. runc 1.1 accepts it (fails on runc).
conformance!(
    linux_readonly_paths_relative_rejected,
    runc_differs = "runc accepts relative read-only paths; the spec requires absolute ones",
    |rt: &Runtime| {
        let mut b = Bundle::new();
        b.write_file("/readonly-relpath", "x");
        b.add_readonly_path("readonly-relpath").args(&["true"]);
        let id = rt.new_id();
        let g = rt.guard(&id);
        rt.run(&b, &id).assert_fail("run with a relative read-only path");
        drop(g);
        assert_nothing_left(rt, &b, "after a rejected config");
    }
);

// linux.mountLabel. With SELinux enabled the label is applied to the container's mounts. This host has
// no SELinux: a label that cannot be applied must fail the container cleanly (runc passes context= to
// mount, which the kernel rejects) instead of silently running unlabeled.
conformance!(linux_mount_label, |rt: &Runtime| {
    let label = "system_u:object_r:svirt_sandbox_file_t:s0:c715,c811";
    let mut b = Bundle::new();
    b.mount_label(label);
    let id = rt.new_id();
    let g = rt.guard(&id);
    if host::selinux_enabled() {
        b.sh("cat /proc/self/mountinfo");
        let out = rt.run(&b, &id);
        out.assert_ok("run with a mount label");
        let mi = parse_mountinfo(&out.stdout);
        let dev = mount_at(&mi, "/dev").expect("/dev mount");
        assert!(
            dev.super_options.contains("c715,c811"),
            "label not applied to /dev: {}",
            dev.line
        );
    } else {
        b.args(&["true"]);
        rt.run(&b, &id)
            .assert_fail("run with a mount label on a host without SELinux");
        drop(g);
        assert_nothing_left(rt, &b, "after a failed mount label");
    }
});

// process.apparmorProfile. AppArmor is not enabled on this host (no /sys/module/apparmor), and the
// profile is not loaded anywhere: the runtime must fail rather than run the process unconfined, and
// leave nothing behind.
conformance!(linux_process_apparmor_profile, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.apparmor_profile("acme_secure_profile").args(&["true"]);
    let id = rt.new_id();
    let g = rt.guard(&id);
    let out = rt.run(&b, &id);
    out.assert_fail(&format!(
        "run with an AppArmor profile that cannot be applied (apparmor enabled: {})",
        host::apparmor_enabled()
    ));
    drop(g);
    assert_nothing_left(rt, &b, "after a failed apparmor profile");
});

// A namespace type absent from the config is inherited from the runtime. The runtime runs in a
// throw-away mount namespace (a container sharing the runtime's mount namespace mounts into it), and
// that namespace is what the container must be in.
conformance!(linux_ns_itype, |rt: &Runtime| {
    let helper = isolate_mounts(rt);
    let mut b = Bundle::new();
    b.namespaces(&[])
        .remove_hostname()
        .mounts(json!([{"destination": "/proc", "type": "proc", "source": "proc"}]))
        .masked_paths(&[])
        .readonly_paths(&[])
        .args(&["sleep", "30"]);
    let c = rt.create_container(&b);
    let pid = c.pid();
    let mut diffs = Vec::new();
    for ns in host::ns_kinds() {
        let want = if ns == "mnt" {
            helper.ns_link("mnt")
        } else {
            host::ns_link("self", &ns)
        };
        let got = host::ns_link(&pid, &ns);
        if want != got {
            diffs.push(format!("{ns}: container {got:?}, runtime {want:?}"));
        }
    }
    assert!(diffs.is_empty(), "namespaces not inherited: {diffs:#?}");
});

// A namespace listed without a path is newly created (user namespace with id mappings included).
conformance!(linux_ns_nopath, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.namespaces(&["cgroup", "ipc", "mount", "network", "pid", "user", "uts"])
        .uid_mappings(0, 1000, 1000)
        .gid_mappings(0, 1000, 1000)
        .args(&["sleep", "30"]);
    let c = rt.create_container(&b);
    let pid = c.pid();
    let mut same = Vec::new();
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        let mine = host::ns_link("self", ns);
        let theirs = host::ns_link(&pid, ns);
        if theirs.is_none() || mine == theirs {
            same.push(format!("{ns}: {theirs:?}"));
        }
    }
    assert!(same.is_empty(), "namespaces not created: {same:?}");
});

// A namespace with a path joins that namespace (ipc, mnt, net, pid, uts of a helper made by unshare).
conformance!(linux_ns_path, |rt: &Runtime| {
    for (ns, typ, opt) in [
        ("ipc", "ipc", "--ipc"),
        ("mnt", "mount", "--mount"),
        ("net", "network", "--net"),
        ("pid", "pid", "--pid"),
        ("uts", "uts", "--uts"),
    ] {
        let mut opts = vec![opt, "--fork"];
        if ns == "mnt" {
            opts.extend(["--propagation", "private"]);
        }
        let helper = NsHelper::new(&opts, ns);
        let mut b = Bundle::new();
        b.namespace(typ, Some(&helper.ns_path(ns))).args(&["sleep", "30"]);
        let c = rt.create_container(&b);
        let got = host::ns_link(&c.pid(), ns);
        assert_eq!(
            got,
            helper.ns_link(ns),
            "container did not join the {ns} namespace at {}",
            helper.ns_path(ns)
        );
        drop(c);
    }
});

// A namespace path whose namespace is of another type MUST be rejected.
conformance!(linux_ns_path_type, |rt: &Runtime| {
    let helper = isolate_mounts(rt);
    let hp = helper.pid();
    for (typ, wrong) in [
        ("cgroup", "ipc"),
        ("ipc", "mnt"),
        ("mount", "net"),
        ("network", "pid"),
        ("pid", "user"),
        ("user", "uts"),
        ("uts", "cgroup"),
    ] {
        let mut b = Bundle::new();
        b.namespace(typ, Some(&format!("/proc/{hp}/ns/{wrong}")))
            .args(&["true"]);
        if typ == "user" {
            // Valid mappings, so that the wrong namespace type is the only thing wrong.
            b.uid_mappings(0, 1000, 1000).gid_mappings(0, 1000, 1000);
        }
        let id = rt.new_id();
        let g = rt.guard(&id);
        rt.run(&b, &id)
            .assert_fail(&format!("{typ} namespace given the path of a {wrong} namespace"));
        drop(g);
        assert_nothing_left(rt, &b, "after a rejected namespace path");
    }
});

// rootfsPropagation sets the propagation of the container's root mount, without changing the host's.
conformance!(
    linux_rootfs_propagation,
    runc_differs = "runc leaves the root private for 'shared' and fails 'unbindable' with EINVAL",
    |rt: &Runtime| {
        let host_root_before = mount_at(&host::mountinfo(), "/").map(|m| m.optional.clone());
        let mut failures = Vec::new();
        for mode in ["shared", "slave", "private", "unbindable"] {
            let mut b = Bundle::new();
            b.rootfs_propagation(mode).sh("cat /proc/self/mountinfo");
            let id = rt.new_id();
            let _g = rt.guard(&id);
            let out = rt.run(&b, &id);
            if !out.success() {
                failures.push(format!("{mode}: run failed\n{out}"));
                continue;
            }
            let mi = parse_mountinfo(&out.stdout);
            let Some(root) = mount_at(&mi, "/") else {
                failures.push(format!("{mode}: no / in mountinfo"));
                continue;
            };
            let ok = match mode {
                "shared" => root.is_shared(),
                "slave" => !root.is_shared(),
                "private" => !root.is_shared() && !root.is_slave(),
                _ => root.is_unbindable(),
            };
            if !ok {
                failures.push(format!(
                    "{mode}: root mount is {:?}: {}",
                    root.optional, root.line
                ));
            }
        }
        assert_eq!(
            mount_at(&host::mountinfo(), "/").map(|m| m.optional.clone()),
            host_root_before,
            "the host's root propagation changed"
        );
        assert!(
            failures.is_empty(),
            "rootfsPropagation not applied:\n{}",
            failures.join("\n")
        );
    }
);

// seccomp: the default action applies, listed syscalls get their action (errno, with errnoRet).
conformance!(linux_seccomp, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    }));
    b.sh("/bin/pwd 2>&1; echo pwd=$?; mkdir /newdir 2>&1; echo mkdir=$?; grep Seccomp: /proc/self/status | tr -d '\\t' | tr ':' '='; echo still=alive");
    let out = rt.run_ok(&b).stdout.clone();
    let m = kv(&out);
    assert_ne!(
        m.get("pwd").map(String::as_str),
        Some("0"),
        "getcwd not blocked:\n{out}"
    );
    assert!(
        out.contains("Operation not permitted"),
        "getcwd should fail with EPERM:\n{out}"
    );
    assert_ne!(
        m.get("mkdir").map(String::as_str),
        Some("0"),
        "mkdir not blocked:\n{out}"
    );
    assert!(
        out.contains("Function not implemented"),
        "mkdir should fail with errnoRet 38 (ENOSYS):\n{out}"
    );
    assert_eq!(m.get("Seccomp").map(String::as_str), Some("2"), "{out}");
    assert_eq!(m.get("still").map(String::as_str), Some("alive"), "{out}");
    assert!(!b.host_path("/newdir").exists());
});

// sysctl: namespaced sysctls are set inside the container only; one that would change the host (net.*
// without a network namespace, or a non-namespaced key) MUST be rejected.
conformance!(linux_sysctl, |rt: &Runtime| {
    let host_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_shm = std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap();
    let mut b = Bundle::new();
    b.sysctl("net.ipv4.ip_forward", "1")
        .sysctl("kernel.shm_rmid_forced", "1")
        .sh(
            "echo fwd=$(cat /proc/sys/net/ipv4/ip_forward); echo shm=$(cat /proc/sys/kernel/shm_rmid_forced)",
        );
    let out = rt.run_ok(&b).stdout.clone();
    let m = kv(&out);
    assert_eq!(m.get("fwd").map(String::as_str), Some("1"), "{out}");
    assert_eq!(m.get("shm").map(String::as_str), Some("1"), "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_fwd
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap(),
        host_shm
    );

    // Rejected: net.* sharing the host's network namespace; a non-namespaced key (given its current
    // host value, so a runtime that wrongly applies it changes nothing).
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_ratio").unwrap();
    let cases: [(&str, &str, bool); 2] = [
        ("net.ipv4.ip_forward", host_fwd.trim(), true),
        ("vm.overcommit_ratio", overcommit.trim(), false),
    ];
    for (key, value, drop_netns) in cases {
        let mut b = Bundle::new();
        b.sysctl(key, value).args(&["true"]);
        if drop_netns {
            b.remove_namespace("network");
        }
        let id = rt.new_id();
        let g = rt.guard(&id);
        rt.run(&b, &id)
            .assert_fail(&format!("sysctl {key} that is not in a private namespace"));
        drop(g);
        assert_nothing_left(rt, &b, "after a rejected sysctl");
    }
});

// uidMappings/gidMappings with a user namespace: the maps are written, container root is host uid 1000.
conformance!(linux_uid_mappings, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.namespace("user", None)
        .uid_mappings(0, 1000, 2000)
        .gid_mappings(0, 1000, 3000)
        .sh("cat /proc/self/uid_map /proc/self/gid_map; echo id=$(id -u):$(id -g)");
    let c = rt.create_container(&b);
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let uid = host::status_field(&status, "Uid").unwrap_or_default().to_string();
    let gid = host::status_field(&status, "Gid").unwrap_or_default().to_string();
    c.start().assert_ok("start");
    c.wait_stopped();
    let out = c.output();
    let maps: Vec<Vec<&str>> = out
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        maps,
        vec![vec!["0", "1000", "2000"], vec!["0", "1000", "3000"]],
        "{out}"
    );
    assert!(out.contains("id=0:0"), "{out}");
    assert!(
        uid.split_whitespace().all(|u| u == "1000"),
        "container root seen from the host: Uid {uid}"
    );
    assert!(
        gid.split_whitespace().all(|g| g == "1000"),
        "container root seen from the host: Gid {gid}"
    );
});

// mounts: types, options and propagation flags are applied, destinations are created, bind mounts show
// their source, and nothing appears in the host's mount table.
conformance!(mounts, |rt: &Runtime| {
    let src = vessel_conformance::tempdir::TempDir::new("mountsrc");
    std::fs::write(src.path().join("hello"), "from the host\n").unwrap();
    std::fs::write(src.path().join("single"), "a file\n").unwrap();
    let s = src.path().to_string_lossy().into_owned();
    let single = format!("{s}/single");
    let mut b = Bundle::new();
    let opts = ["nosuid", "strictatime", "mode=755", "size=1k"];
    fn with<'a>(opts: &[&'a str], extra: &'a str) -> Vec<&'a str> {
        opts.iter().copied().chain([extra]).collect()
    }
    b.add_mount("/tmp/test-shared", "tmpfs", "tmpfs", &with(&opts, "shared"))
        .add_mount("/tmp/test-slave", "tmpfs", "tmpfs", &with(&opts, "slave"))
        .add_mount("/tmp/test-private", "tmpfs", "tmpfs", &with(&opts, "private"))
        .add_mount("/mnt/bind-rshared", "", &s, &["rbind", "rshared"])
        .add_mount("/mnt/bind-rslave", "", &s, &["rbind", "rslave"])
        .add_mount("/mnt/bind-private", "bind", &s, &["bind", "private"])
        .add_mount("/mnt/bind-unbindable", "", &s, &["bind", "unbindable"])
        .add_mount("/mnt/bind-ro", "", &s, &["bind", "ro", "nodev"])
        .add_mount("/mnt/deep/a/b/c", "tmpfs", "tmpfs", &["size=64k"])
        .add_mount("/etc/single-file", "", &single, &["bind", "ro"]);
    b.sh("cat /mnt/bind-private/hello /etc/single-file; \
         (echo x > /mnt/bind-ro/new) 2>/dev/null && echo ro=writable || echo ro=readonly; \
         echo tmp > /tmp/test-private/f && echo tmpfs=writable; \
         echo ---; cat /proc/self/mountinfo");
    let c = rt.create_container(&b);
    let leaked: Vec<String> = host::mounts_mentioning(src.path());
    assert!(
        leaked.is_empty(),
        "container mounts visible on the host: {leaked:#?}"
    );
    c.start().assert_ok("start");
    c.wait_stopped();
    let out = c.output();
    let (head, mounts) = out.split_once("---\n").unwrap_or((&out, ""));
    assert!(
        head.contains("from the host\na file\n"),
        "bind mount contents:\n{out}"
    );
    assert!(head.contains("ro=readonly"), "ro bind mount writable:\n{out}");
    assert!(head.contains("tmpfs=writable"), "{out}");
    let mi = parse_mountinfo(mounts);
    let at = |d: &str| {
        mount_at(&mi, d)
            .unwrap_or_else(|| panic!("{d} not mounted:\n{mounts}"))
            .clone()
    };
    let shared = at("/tmp/test-shared");
    assert_eq!(shared.fstype, "tmpfs");
    assert!(shared.has_option("nosuid"), "{}", shared.line);
    assert!(
        shared.super_options.contains("size=4k") || shared.super_options.contains("size="),
        "{}",
        shared.line
    );
    assert!(shared.is_shared(), "shared tmpfs: {}", shared.line);
    assert!(!at("/tmp/test-slave").is_shared(), "slave tmpfs is shared");
    let p = at("/tmp/test-private");
    assert!(!p.is_shared() && !p.is_slave(), "private tmpfs: {}", p.line);
    assert!(at("/mnt/bind-rshared").is_shared(), "rshared bind");
    assert!(!at("/mnt/bind-rslave").is_shared(), "rslave bind is shared");
    let bp = at("/mnt/bind-private");
    assert!(!bp.is_shared() && !bp.is_slave(), "private bind: {}", bp.line);
    assert!(
        bp.root
            .ends_with(src.path().file_name().unwrap().to_str().unwrap()),
        "bind root: {}",
        bp.line
    );
    assert!(at("/mnt/bind-unbindable").is_unbindable(), "unbindable bind");
    let ro = at("/mnt/bind-ro");
    assert!(
        ro.has_option("ro") && ro.has_option("nodev"),
        "ro,nodev bind: {}",
        ro.line
    );
    assert_eq!(at("/mnt/deep/a/b/c").fstype, "tmpfs");
    assert!(at("/etc/single-file").has_option("ro"));
    drop(c);
    assert!(
        host::mounts_mentioning(src.path()).is_empty(),
        "mounts left on the host"
    );
});
