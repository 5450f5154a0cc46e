//! The runc-compatible verbs beyond the lifecycle: exec (args, flags, --process, --detach, namespaces,
//! errors), ps, list, pause/resume, events --stats, update, kill --all, spec, features, --version, the
//! console socket, --preserve-fds and socket activation (LISTEN_FDS), and the protection of the runtime
//! binary against CVE-2019-5736.

use std::collections::BTreeMap;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vessel_conformance::runtime::{cmd_timeout, run_bounded};
use vessel_conformance::tempdir::TempDir;
use vessel_conformance::*;

// ----- helpers -----

/// A bundle whose process sleeps (long enough for any test, short enough not to linger).
fn sleeper() -> Bundle {
    let mut b = Bundle::new();
    b.args(&["sleep", "30"]);
    b
}

/// Creates and starts a container, asserting both steps.
fn running<'a>(rt: &'a Runtime, b: &Bundle) -> Container<'a> {
    let c = rt.create_container(b);
    c.start()
        .assert_ok(&format!("{} start of a created container", rt.name()));
    c
}

/// `key=value` lines printed by a script.
fn kv(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn get<'a>(m: &'a BTreeMap<String, String>, k: &str) -> Option<&'a str> {
    m.get(k).map(String::as_str)
}

/// Parses stdout as exactly one JSON value (trailing text is an error).
fn json_out(out: &Out, what: &str) -> Value {
    out.assert_ok(what);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{what} did not print one JSON value ({e}):\n{out}"))
}

/// `ps --format json ID` as host pids.
fn ps_pids(rt: &Runtime, id: &str) -> Vec<i64> {
    let v = json_out(&rt.exec(&["ps", "--format", "json", id]), "ps --format json");
    v.as_array()
        .unwrap_or_else(|| panic!("ps --format json printed no array: {v}"))
        .iter()
        .map(|p| {
            p.as_i64()
                .unwrap_or_else(|| panic!("ps: {p} is not a pid in {v}"))
        })
        .collect()
}

/// The last field of `NSpid:` in /proc/PID/status: the pid as the innermost pid namespace sees it.
fn inner_pid(pid: i64) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    host::status_field(&status, "NSpid")
        .and_then(|f| f.split_whitespace().last())
        .map(String::from)
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The container's cgroup directory for a v1 controller, from /proc/<init>/cgroup.
fn cgroup_dir(c: &Container, controller: &str) -> std::path::PathBuf {
    let pid = c.pid();
    host::cgroup_dir_of(&pid, controller).unwrap_or_else(|| {
        panic!(
            "container pid {pid} has no {controller} cgroup on this host: {:?}",
            host::proc_cgroups(&pid)
        )
    })
}

// ----- exec -----

// `exec ID CMD...` runs CMD in the container with the container's process as the template, --env added,
// --cwd and --user applied; the exec'd process's exit code is the runtime's.
conformance!(exec_args, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let out = rt.exec(&[
        "exec",
        "--env",
        "K=V",
        "--cwd",
        "/tmp",
        "--user",
        "1000:1000",
        &c.id,
        "sh",
        "-c",
        "echo k=$K; echo term=$TERM; echo cwd=$(pwd); echo uid=$(id -u); echo gid=$(id -g)",
    ]);
    out.assert_ok("exec --env --cwd --user");
    let m = kv(&out.stdout);
    assert_eq!(get(&m, "k"), Some("V"), "--env K=V not applied:\n{out}");
    assert_eq!(
        get(&m, "term"),
        Some("xterm"),
        "the container's own env (TERM=xterm) is not kept:\n{out}"
    );
    assert_eq!(get(&m, "cwd"), Some("/tmp"), "--cwd not applied:\n{out}");
    assert_eq!(get(&m, "uid"), Some("1000"), "--user uid not applied:\n{out}");
    assert_eq!(get(&m, "gid"), Some("1000"), "--user gid not applied:\n{out}");

    let out = rt.exec(&["exec", &c.id, "sh", "-c", "exit 7"]);
    assert_eq!(
        out.code,
        Some(7),
        "the exit code of the exec'd process must be the runtime's:\n{out}"
    );
    assert_eq!(
        c.status().as_deref(),
        Some("running"),
        "the container stopped after an exec"
    );
});

// `exec --process FILE ID` runs the process described by a process.json, as given (its own env).
conformance!(exec_process_file, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let process = json!({
        "terminal": false,
        "user": {"uid": 1000, "gid": 1000},
        "args": ["sh", "-c", "echo foo=$FOO; echo term=$TERM; echo cwd=$(pwd); echo uid=$(id -u)"],
        "env": ["PATH=/bin", "FOO=bar"],
        "cwd": "/tmp",
        "noNewPrivileges": true
    });
    let file = b.path().join("process.json");
    std::fs::write(&file, process.to_string()).unwrap();
    let out = rt.exec(&["exec", "--process", &file.to_string_lossy(), &c.id]);
    out.assert_ok("exec --process");
    let m = kv(&out.stdout);
    assert_eq!(get(&m, "foo"), Some("bar"), "process.json env:\n{out}");
    assert_eq!(
        get(&m, "term"),
        Some(""),
        "process.json replaces the env, the container's TERM must not leak in:\n{out}"
    );
    assert_eq!(get(&m, "cwd"), Some("/tmp"), "process.json cwd:\n{out}");
    assert_eq!(get(&m, "uid"), Some("1000"), "process.json user:\n{out}");
});

// `exec -d --pid-file F` returns at once; F holds the pid of a live process in the container's cgroups
// and pid namespace, which then exits on its own.
conformance!(exec_detach_pid_file, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let init = c.pid();
    let pf = b.path().join("exec.pid");
    let out = rt.exec(&[
        "exec",
        "-d",
        "--pid-file",
        &pf.to_string_lossy(),
        &c.id,
        "sleep",
        "2",
    ]);
    out.assert_ok("exec -d --pid-file");
    let text = std::fs::read_to_string(&pf).unwrap_or_default();
    let pid: i64 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file {} holds {text:?}", pf.display()));
    assert!(host::pid_alive(pid), "pid {pid} from the pid file is not alive");
    assert_ne!(pid.to_string(), init, "the pid file holds the init's pid");
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmd).starts_with("sleep\u{0}2"),
        "pid {pid} is not the exec'd `sleep 2`: {:?}",
        String::from_utf8_lossy(&cmd)
    );
    assert_eq!(
        host::proc_cgroups(&pid.to_string()),
        host::proc_cgroups(&init),
        "the exec'd process is not in the container's cgroups"
    );
    assert_eq!(
        host::ns_link(&pid.to_string(), "pid"),
        host::ns_link(&init, "pid"),
        "the exec'd process is not in the container's pid namespace"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !host::pid_alive(pid)),
        "the detached exec'd process {pid} did not exit"
    );
    assert_eq!(c.status().as_deref(), Some("running"));
});

// The exec'd process is in the init's pid, mount, network, uts and ipc namespaces (not the host's).
conformance!(exec_joins_namespaces, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let init = c.pid();
    let kinds = ["pid", "mnt", "net", "uts", "ipc"];
    let script = "for n in pid mnt net uts ipc; do echo $n=$(readlink /proc/self/ns/$n); done";
    let out = rt.exec(&["exec", &c.id, "sh", "-c", script]);
    out.assert_ok("exec readlink /proc/self/ns/*");
    let m = kv(&out.stdout);
    for ns in kinds {
        let want = host::ns_link(&init, ns).unwrap_or_else(|| panic!("no /proc/{init}/ns/{ns}"));
        assert_ne!(
            host::ns_link("self", ns).as_deref(),
            Some(want.as_str()),
            "the container shares the test's {ns} namespace: the check would prove nothing"
        );
        assert_eq!(
            get(&m, ns),
            Some(want.as_str()),
            "exec'd process is not in the init's {ns} namespace:\n{out}"
        );
    }
});

// `exec` into a stopped container fails (non-zero exit); vessel says why in one stderr line.
conformance!(exec_stopped_container, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.args(&["true"]);
    let c = running(rt, &b);
    c.wait_stopped();
    let out = rt.exec(&["exec", &c.id, "true"]);
    out.assert_fail("exec into a stopped container");
    assert!(
        !out.stderr_lines().is_empty(),
        "exec into a stopped container failed silently:\n{out}"
    );
    if rt.is_vessel() {
        assert_eq!(
            out.stderr_lines().len(),
            1,
            "a user error must be reported in one line:\n{out}"
        );
    }
});

// `exec --detach --tty` without --console-socket fails with a message: nobody would hold the pty master.
// (In the foreground the runtime relays a pty of its own: see exec_tty_foreground.)
conformance!(exec_tty_without_console_socket, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let out = rt.exec(&["exec", "--detach", "--tty", &c.id, "true"]);
    out.assert_fail("exec --detach --tty without --console-socket");
    assert!(
        !out.stderr_lines().is_empty(),
        "exec --detach --tty without --console-socket failed without saying why:\n{out}"
    );
    if rt.is_vessel() {
        assert_eq!(out.stderr_lines().len(), 1, "one line expected:\n{out}");
        assert!(
            out.stderr.contains("console-socket"),
            "the message should name --console-socket:\n{out}"
        );
    }
    assert_eq!(c.status().as_deref(), Some("running"));
});

/// Quotes `s` for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

// With a terminal on its stdio (here from `script`, which also makes it the controlling terminal), a
// foreground `exec --tty` without --console-socket gives the process a pty of its own and relays it, as
// `run` does with process.terminal: the interactive `exec -t ID sh` of runc.
conformance!(exec_tty_foreground, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let argv = [
        rt.bin().to_string_lossy().into_owned(),
        "--root".into(),
        rt.root().to_string_lossy().into_owned(),
        "exec".into(),
        "--tty".into(),
        c.id.clone(),
        "sh".into(),
        "-c".into(),
        "busybox tty; echo exec-tty-done".into(),
    ];
    let line: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"]);
    let out = run_bounded(cmd, cmd_timeout()).0;
    // The output starts with a `^@` (a NUL echoed by the pty script(1) makes).
    let text = out.stdout.replace('\0', "").replace("^@", "");
    out.assert_ok("exec --tty from a terminal (under script(1))");
    assert!(
        pty_lines(&text).contains(&"exec-tty-done"),
        "the exec'd process's output did not come through:\n{out}"
    );
    assert!(
        pty_lines(&text).into_iter().any(is_pts),
        "the exec'd process has no /dev/pts/N terminal:\n{out}"
    );
});

// ----- ps, list -----

// `ps --format json ID` lists the host pids of the init and of a background process it started.
conformance!(ps_json, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.sh("sleep 30 & echo $! > /bg.tmp; mv /bg.tmp /bg.pid; wait");
    let c = running(rt, &b);
    let bg_file = b.host_path("/bg.pid");
    assert!(wait_for_file(&bg_file), "the container never wrote /bg.pid");
    let bg_inner = read_trim(&bg_file);
    let init: i64 = c.pid().parse().unwrap();
    let pids = ps_pids(rt, &c.id);
    assert!(pids.contains(&init), "ps lacks the init pid {init}: {pids:?}");
    assert!(
        pids.iter()
            .any(|p| *p != init && inner_pid(*p).as_deref() == Some(bg_inner.as_str())),
        "ps lacks the background sleep (pid {bg_inner} in the container): {pids:?}"
    );
    assert_eq!(pids.len(), 2, "ps lists other processes: {pids:?}");
});

// `list --format json` shows each container with its status and pid; `list -q` prints only the ids.
conformance!(list, |rt: &Runtime| {
    let b1 = sleeper();
    let c1 = running(rt, &b1);
    let b2 = sleeper();
    let c2 = rt.create_container(&b2);
    let v = json_out(&rt.exec(&["list", "--format", "json"]), "list --format json");
    let all = v
        .as_array()
        .unwrap_or_else(|| panic!("list --format json printed no array: {v}"));
    for (c, status) in [(&c1, "running"), (&c2, "created")] {
        let e = all
            .iter()
            .find(|e| e["id"] == c.id.as_str())
            .unwrap_or_else(|| panic!("list lacks {}: {v}", c.id));
        assert_eq!(e["status"], status, "status of {} in list: {e}", c.id);
        assert_eq!(
            e["pid"].as_i64().map(|p| p.to_string()),
            Some(c.pid()),
            "pid of {} in list: {e}",
            c.id
        );
    }
    assert_eq!(all.len(), 2, "list shows containers that are not ours: {v}");

    let q = rt.exec(&["list", "-q"]);
    q.assert_ok("list -q");
    let mut ids: Vec<&str> = q.lines().into_iter().filter(|l| !l.is_empty()).collect();
    ids.sort();
    let mut want = vec![c1.id.as_str(), c2.id.as_str()];
    want.sort();
    assert_eq!(ids, want, "list -q:\n{q}");
});

// ----- pause, resume -----

fn counter(b: &Bundle) -> Option<u64> {
    std::fs::read_to_string(b.host_path("/count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

// `pause` freezes every process (state "paused", the freezer FROZEN, a counter stops); `resume` thaws them.
conformance!(pause_resume, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.sh("i=0; while :; do i=$((i+1)); echo $i > /count.tmp; mv /count.tmp /count; sleep 0.05; done");
    let c = running(rt, &b);
    assert!(
        wait_until(Duration::from_secs(10), || counter(&b).is_some_and(|n| n >= 2)),
        "the counter never started"
    );
    rt.exec(&["pause", &c.id]).assert_ok("pause");
    assert_eq!(c.state()["status"], "paused", "state after pause");
    let freezer = cgroup_dir(&c, "freezer");
    assert_eq!(
        read_trim(&freezer.join("freezer.state")),
        "FROZEN",
        "freezer.state in {}",
        freezer.display()
    );
    let frozen_at = counter(&b);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        counter(&b),
        frozen_at,
        "the counter advanced while the container was paused"
    );

    rt.exec(&["resume", &c.id]).assert_ok("resume");
    assert_eq!(c.state()["status"], "running", "state after resume");
    assert_eq!(read_trim(&freezer.join("freezer.state")), "THAWED");
    let base = frozen_at.unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(5), || counter(&b).is_some_and(|n| n > base)),
        "the counter did not advance after resume (stuck at {frozen_at:?})"
    );
});

// ----- events -----

// `events --stats ID` prints one JSON object {"type":"stats","id":ID,"data":{...}} whose data has runc's
// shape: memory.usage.{usage,limit,max,failcnt}, pids.current, cpu.usage.total.
conformance!(events_stats, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let out = rt.exec(&["events", "--stats", &c.id]);
    let v = json_out(&out, "events --stats");
    assert_eq!(
        out.stdout.trim().lines().count(),
        1,
        "one event on one line expected:\n{out}"
    );
    assert_eq!(v["type"], "stats", "{v}");
    assert_eq!(v["id"], c.id.as_str(), "{v}");
    let d = &v["data"];
    let mem = &d["memory"]["usage"];
    assert!(
        mem["usage"].as_u64().is_some_and(|u| u > 0),
        "data.memory.usage.usage: {d}"
    );
    for k in ["limit", "max", "failcnt"] {
        assert!(mem[k].is_u64(), "data.memory.usage.{k} missing: {d}");
    }
    assert!(
        d["pids"]["current"].as_u64().is_some_and(|n| n >= 1),
        "data.pids.current: {d}"
    );
    assert!(d["cpu"]["usage"]["total"].is_u64(), "data.cpu.usage.total: {d}");
});

// ----- update -----

// `update --memory 64m --pids-limit 20` and `update --resources FILE` (cpu quota and period) change the
// container's cgroup files on the host.
conformance!(update, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let mem = cgroup_dir(&c, "memory");
    let pids = cgroup_dir(&c, "pids");
    let cpu = cgroup_dir(&c, "cpu");
    rt.exec(&["update", "--memory", "64m", "--pids-limit", "20", &c.id])
        .assert_ok("update --memory 64m --pids-limit 20");
    assert_eq!(
        read_trim(&mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string(),
        "memory.limit_in_bytes in {}",
        mem.display()
    );
    assert_eq!(
        read_trim(&pids.join("pids.max")),
        "20",
        "pids.max in {}",
        pids.display()
    );

    let file = b.path().join("resources.json");
    std::fs::write(
        &file,
        json!({"cpu": {"quota": 25000, "period": 50000}}).to_string(),
    )
    .unwrap();
    rt.exec(&["update", "--resources", &file.to_string_lossy(), &c.id])
        .assert_ok("update --resources");
    assert_eq!(
        read_trim(&cpu.join("cpu.cfs_period_us")),
        "50000",
        "cpu.cfs_period_us in {}",
        cpu.display()
    );
    assert_eq!(
        read_trim(&cpu.join("cpu.cfs_quota_us")),
        "25000",
        "cpu.cfs_quota_us in {}",
        cpu.display()
    );
    // An update of cpu leaves the earlier limits alone.
    assert_eq!(read_trim(&pids.join("pids.max")), "20");
    assert_eq!(
        read_trim(&mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(c.status().as_deref(), Some("running"));
});

// runc's single-flag spelling `update --cpu-share N` (what scripts written for runc use) sets cpu.shares.
conformance!(update_cpu_share, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let cpu = cgroup_dir(&c, "cpu");
    rt.exec(&["update", "--cpu-share", "512", &c.id])
        .assert_ok("update --cpu-share 512 (runc's flag)");
    assert_eq!(
        read_trim(&cpu.join("cpu.shares")),
        "512",
        "cpu.shares in {}",
        cpu.display()
    );
});

// ----- kill --all -----

// `kill --all ID KILL` kills every process of the container, not only the init.
conformance!(kill_all, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.sh("sleep 30 & sleep 30 & touch /ready; wait");
    let c = running(rt, &b);
    assert!(
        wait_for_file(&b.host_path("/ready")),
        "the container never became ready"
    );
    let pids = ps_pids(rt, &c.id);
    assert!(pids.len() >= 3, "expected sh and two sleeps, ps says {pids:?}");
    rt.exec(&["kill", "--all", &c.id, "KILL"])
        .assert_ok("kill --all ID KILL");
    let alive = || {
        pids.iter()
            .copied()
            .filter(|p| host::pid_alive(*p))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(5), || alive().is_empty()),
        "kill --all left processes alive: {:?}",
        alive()
    );
    c.wait_stopped();
});

// ----- spec, features, --version -----

// `spec` writes a config.json that parses, with a 1.x ociVersion; a second `spec` refuses to overwrite it.
conformance!(spec, |rt: &Runtime| {
    let dir = TempDir::new("spec");
    let d = dir.path().to_string_lossy().into_owned();
    rt.exec(&["spec", "--bundle", &d])
        .assert_ok("spec in an empty dir");
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("spec wrote no config.json: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("config.json does not parse: {e}"));
    assert!(
        v["ociVersion"].as_str().is_some_and(|s| s.starts_with("1.")),
        "ociVersion: {}",
        v["ociVersion"]
    );
    assert!(v["process"]["args"].is_array(), "no process.args: {v}");
    assert!(v["root"]["path"].is_string(), "no root.path: {v}");

    std::fs::write(&path, "{\"kept\": true}").unwrap();
    let out = rt.exec(&["spec", "--bundle", &d]);
    out.assert_fail("spec over an existing config.json");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        "{\"kept\": true}",
        "the second spec overwrote config.json"
    );
});

// `features` (runtime-spec features.md; runc 1.1.5 has no such command) prints JSON with the version
// range, the namespaces and the seccomp actions.
mod features {
    use super::*;

    #[test]
    fn vessel() {
        let rt = Runtime::vessel().with_area("features");
        let v = json_out(&rt.exec(&["features"]), "features");
        let min = v["ociVersionMin"].as_str().unwrap_or_default();
        let max = v["ociVersionMax"].as_str().unwrap_or_default();
        assert!(min.starts_with("1."), "ociVersionMin: {v}");
        assert!(max.starts_with("1."), "ociVersionMax: {v}");
        let num = |s: &str| -> Vec<u64> {
            s.split(['.', '-', '+'])
                .take(3)
                .map(|p| p.parse().unwrap_or(0))
                .collect()
        };
        assert!(num(min) <= num(max), "ociVersionMin {min} > ociVersionMax {max}");
        let strings = |x: &Value| -> Vec<String> {
            x.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        let ns = strings(&v["linux"]["namespaces"]);
        for want in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
            assert!(
                ns.iter().any(|n| n == want),
                "linux.namespaces lacks {want}: {ns:?}"
            );
        }
        let actions = strings(&v["linux"]["seccomp"]["actions"]);
        for want in ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL"] {
            assert!(
                actions.iter().any(|a| a == want),
                "linux.seccomp.actions lacks {want}: {actions:?}"
            );
        }
    }
}

// `--version` prints `<name> version <x.y...>` first.
conformance!(version, |rt: &Runtime| {
    let out = rt.exec(&["--version"]);
    out.assert_ok("--version");
    let first = out.stdout.lines().next().unwrap_or_default();
    let (name, ver) = first
        .split_once(" version ")
        .unwrap_or_else(|| panic!("no `NAME version X` line:\n{out}"));
    assert!(!name.is_empty(), "{out}");
    assert!(
        ver.starts_with(|ch: char| ch.is_ascii_digit()),
        "the version does not start with a number:\n{out}"
    );
});

// ----- console -----

/// Accepts one connection and receives one fd over SCM_RIGHTS.
fn receive_fd(listener: &UnixListener) -> Result<OwnedFd, String> {
    let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = nix::sys::socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .map_err(|e| format!("recvmsg: {e}"))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| format!("control messages: {e}"))? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(v) = c {
            fds.extend(v);
        }
    }
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        // SAFETY: each fd was just installed in this process by SCM_RIGHTS; nothing else owns it.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    match owned.len() {
        1 => Ok(owned.remove(0)),
        n => Err(format!("expected one fd over SCM_RIGHTS, got {n}")),
    }
}

/// Reads `master` in a thread; chunks come through the channel until EOF or EIO (the slave closed).
fn pty_reader(master: std::fs::File) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut f = master;
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Collects pty output until `done` holds for it (or the deadline / the end of the output).
fn read_until(rx: &mpsc::Receiver<Vec<u8>>, acc: &mut String, done: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(acc) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => acc.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => return done(acc),
        }
    }
    true
}

fn pty_lines(s: &str) -> Vec<&str> {
    s.lines().map(|l| l.trim_matches(['\r', ' '])).collect()
}

/// A unix socket the runtime connects to (`--console-socket`); one accept runs in a thread.
struct ConsoleSocket {
    _dir: TempDir,
    path: String,
    rx: mpsc::Receiver<Result<OwnedFd, String>>,
}

impl ConsoleSocket {
    fn new() -> ConsoleSocket {
        let dir = TempDir::new("console");
        let sock = dir.path().join("console.sock");
        let listener = UnixListener::bind(&sock).unwrap_or_else(|e| panic!("bind {}: {e}", sock.display()));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(receive_fd(&listener));
        });
        ConsoleSocket {
            path: sock.to_string_lossy().into_owned(),
            _dir: dir,
            rx,
        }
    }

    /// The pty master the runtime sent: a writer (a dup) and the reader's channel.
    fn master(&self, what: &str) -> (std::fs::File, mpsc::Receiver<Vec<u8>>) {
        let fd = self
            .rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{what}: no fd arrived on the console socket"))
            .unwrap_or_else(|e| panic!("{what}: console socket: {e}"));
        let master = std::fs::File::from(fd);
        let writer = master.try_clone().expect("dup the pty master");
        (writer, pty_reader(master))
    }
}

fn is_pts(line: &str) -> bool {
    line.strip_prefix("/dev/pts/")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

// `create --console-socket SOCK` with process.terminal sends the pty master over SOCK (SCM_RIGHTS); the
// container's stdio is the pty slave (`tty` prints /dev/pts/N) and what is typed on the master reaches it.
conformance!(console_socket, |rt: &Runtime| {
    let console = ConsoleSocket::new();
    let mut b = Bundle::new();
    b.config_mut()["process"]["terminal"] = json!(true);
    b.sh("busybox tty; read line; eval \"$line\"");
    let id = rt.new_id();
    let _g = rt.guard(&id);
    rt.create_with(&b, &id, &["--console-socket", &console.path])
        .assert_ok("create --console-socket");
    let (mut writer, out) = console.master("create --console-socket");

    rt.start(&id).assert_ok("start");
    let mut text = String::new();
    assert!(
        read_until(&out, &mut text, |t| pty_lines(t).into_iter().any(is_pts)),
        "`tty` in the container did not print /dev/pts/N; the pty gave {text:?}"
    );
    writer.write_all(b"echo hi\n").expect("write to the pty master");
    assert!(
        read_until(&out, &mut text, |t| pty_lines(t).contains(&"hi")),
        "`echo hi` typed on the master did not print hi; the pty gave {text:?}"
    );
    rt.wait_stopped(&id);
});

// `exec --detach --tty --console-socket SOCK` gives the exec'd process a new pty whose master arrives on
// SOCK (runc accepts a console socket only with --detach).
conformance!(exec_console_socket, |rt: &Runtime| {
    let b = sleeper();
    let c = running(rt, &b);
    let console = ConsoleSocket::new();
    let out = rt.exec(&[
        "exec",
        "--detach",
        "--tty",
        "--console-socket",
        &console.path,
        &c.id,
        "sh",
        "-c",
        "busybox tty; echo exec-done",
    ]);
    out.assert_ok("exec --detach --tty --console-socket");
    let (_writer, rx) = console.master("exec --detach --tty --console-socket");
    let mut text = String::new();
    assert!(
        read_until(&rx, &mut text, |t| pty_lines(t).contains(&"exec-done")),
        "the exec'd process's output did not come through the pty; it gave {text:?}"
    );
    assert!(
        pty_lines(&text).into_iter().any(is_pts),
        "`tty` of the exec'd process is not /dev/pts/N: {text:?}"
    );
});

// ----- preserve-fds, LISTEN_FDS -----

/// `run [EXTRA...] --bundle B ID` with `fd3` opened on fd 3 of the runtime (via `sh -c 'exec ... 3>F'`),
/// optionally with LISTEN_FDS=1 and LISTEN_PID=`listen_pid` (systemd socket activation; `$$` is the
/// runtime's own pid, since the shell execs it).
fn run_with_fd3(
    rt: &Runtime,
    b: &Bundle,
    id: &str,
    extra: &[&str],
    fd3: &Path,
    listen_pid: Option<&str>,
) -> Out {
    b.write_config();
    let script = match listen_pid {
        Some(pid) => format!("f=$1; shift; export LISTEN_FDS=1 LISTEN_PID={pid}; exec \"$@\" 3>\"$f\""),
        None => "f=$1; shift; exec \"$@\" 3>\"$f\"".to_string(),
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script, "sh"])
        .arg(fd3)
        .arg(rt.bin())
        .arg("--root")
        .arg(rt.root())
        .arg("run")
        .args(extra)
        .arg("--bundle")
        .arg(b.path())
        .arg(id)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    let out = run_bounded(cmd, cmd_timeout()).0;
    if out.timed_out {
        rt.delete_force(id);
    }
    out
}

// `run --preserve-fds 1` hands the runtime's fd 3 to the container's process; without it fd 3 is closed.
conformance!(preserve_fds, |rt: &Runtime| {
    let dir = TempDir::new("fd3");
    let f = dir.path().join("fd3.out");

    let mut b = Bundle::new();
    b.sh("echo via-fd3 >&3 && echo wrote");
    let id = rt.new_id();
    let _g = rt.guard(&id);
    let out = run_with_fd3(rt, &b, &id, &["--preserve-fds", "1"], &f, None);
    out.assert_ok("run --preserve-fds 1 with fd 3 open");
    assert_eq!(out.stdout, "wrote\n", "{out}");
    assert_eq!(
        std::fs::read_to_string(&f).unwrap_or_default(),
        "via-fd3\n",
        "what the container wrote to fd 3 did not reach the runtime's fd 3"
    );

    let mut b = Bundle::new();
    b.sh("if [ -e /proc/self/fd/3 ]; then echo fd3-open; else echo fd3-closed; fi");
    let id = rt.new_id();
    let _g = rt.guard(&id);
    let out = run_with_fd3(rt, &b, &id, &[], &f, None);
    out.assert_ok("run with fd 3 open but no --preserve-fds");
    assert_eq!(
        out.stdout, "fd3-closed\n",
        "fd 3 leaked into the container without --preserve-fds:\n{out}"
    );
});

// Socket activation: LISTEN_FDS=1 (with LISTEN_PID = the runtime's pid) passes fd 3 through, and the
// container's process gets LISTEN_FDS=1 and LISTEN_PID = its own pid.
conformance!(listen_fds, |rt: &Runtime| {
    let dir = TempDir::new("fd3");
    let f = dir.path().join("fd3.out");
    let mut b = Bundle::new();
    b.sh("echo fds=$LISTEN_FDS; echo pid=$LISTEN_PID; echo self=$$; echo via-listen-fds >&3");
    let id = rt.new_id();
    let _g = rt.guard(&id);
    let out = run_with_fd3(rt, &b, &id, &[], &f, Some("$$"));
    out.assert_ok("run with LISTEN_FDS=1 and fd 3 open");
    let m = kv(&out.stdout);
    assert_eq!(get(&m, "fds"), Some("1"), "LISTEN_FDS in the container:\n{out}");
    assert_eq!(
        get(&m, "pid"),
        get(&m, "self"),
        "LISTEN_PID must be the container process's own pid:\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&f).unwrap_or_default(),
        "via-listen-fds\n",
        "the activation fd 3 did not reach the container"
    );
});

// sd_listen_fds(3): the fds belong to the process whose pid is LISTEN_PID. A LISTEN_FDS inherited from
// some ancestor (LISTEN_PID is not the runtime's pid) must not hand the runtime's fd 3 to the container.
conformance!(listen_fds_other_pid, |rt: &Runtime| {
    let dir = TempDir::new("fd3");
    let f = dir.path().join("fd3.out");
    let mut b = Bundle::new();
    b.sh("echo fds=$LISTEN_FDS; if [ -e /proc/self/fd/3 ]; then echo fd3-open; else echo fd3-closed; fi");
    let id = rt.new_id();
    let _g = rt.guard(&id);
    let out = run_with_fd3(rt, &b, &id, &[], &f, Some("1"));
    out.assert_ok("run with LISTEN_FDS=1 LISTEN_PID=1 (not the runtime) and fd 3 open");
    let m = kv(&out.stdout);
    assert_eq!(
        get(&m, "fds"),
        Some(""),
        "LISTEN_FDS meant for another process reached the container:\n{out}"
    );
    assert!(
        out.stdout.contains("fd3-closed"),
        "the runtime's fd 3 leaked into the container on a LISTEN_FDS meant for another process:\n{out}"
    );
});

// ----- CVE-2019-5736 (vessel only: runc 1.1.5 protects itself differently, with a sealed memfd copy) -----

mod exe_protection {
    use super::*;

    // While the init waits for `start`, its /proc/PID/exe is the runtime binary on a read-only mount:
    // the exploit's open(O_WRONLY|O_TRUNC) fails with EROFS, a plain write open fails too.
    #[test]
    fn vessel() {
        let rt = Runtime::vessel().with_area("exe-protection");
        let mut b = Bundle::new();
        b.args(&["true"]);
        let c = rt.create_container(&b);
        let pid = c.pid();
        let exe = format!("/proc/{pid}/exe");
        let bin = std::fs::metadata(rt.bin()).unwrap();
        let m = std::fs::metadata(&exe).unwrap_or_else(|e| panic!("stat {exe}: {e}"));
        assert_eq!(
            (m.dev(), m.ino()),
            (bin.dev(), bin.ino()),
            "{exe} ({:?}) is not the runtime binary {}",
            std::fs::read_link(&exe),
            rt.bin().display()
        );
        let vfs = nix::sys::statvfs::statvfs(exe.as_str()).unwrap_or_else(|e| panic!("statvfs {exe}: {e}"));
        // Checked first: only a read-only mount makes the write attempts below safe to try.
        assert!(
            vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
            "the mount of {exe} ({:?}) is not read-only: the host binary is exposed",
            std::fs::read_link(&exe)
        );
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&exe)
            .expect_err("the runtime binary of a container's init opened for writing");
        // The kernel checks "executing" (ETXTBSY) before the mount on a plain open; both deny the write.
        assert!(
            matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::ETXTBSY)),
            "open({exe}, O_WRONLY): {err}"
        );
        let err = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&exe)
            .expect_err("the runtime binary of a container's init opened with O_TRUNC");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EROFS),
            "open({exe}, O_WRONLY|O_TRUNC) must fail on the read-only mount: {err}"
        );
    }
}

/// Copies what `ldd` says `bin` needs (its shared libraries and ELF interpreter) into the rootfs at the same
/// paths, so that the binary can run inside a busybox container.
fn copy_libs_for(bin: &Path, b: &Bundle) {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .expect("cannot run ldd (libc-bin)");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .rsplit("=>")
            .next()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            let dest = b.host_path(p);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(p, &dest).unwrap_or_else(|e| panic!("copy {p} into the rootfs: {e}"));
        }
    }
}

mod exe_shebang {
    use super::*;

    // A container whose program is a `#!/proc/self/exe` script makes the kernel run the runtime's own binary
    // inside the container (the libraries it needs are copied into the rootfs so that it really runs);
    // afterwards the host's binary is byte for byte what it was. Nothing here writes to the binary.
    #[test]
    fn vessel() {
        let rt = Runtime::vessel().with_area("exe-shebang");
        let before = std::fs::read(rt.bin()).unwrap();
        let mtime_before = std::fs::metadata(rt.bin()).unwrap().mtime();
        let mut b = Bundle::new();
        b.write_file("/evil", "#!/proc/self/exe\n");
        std::fs::set_permissions(b.host_path("/evil"), std::fs::Permissions::from_mode(0o755)).unwrap();
        copy_libs_for(rt.bin(), &b);
        b.args(&["/evil"]);
        let id = rt.new_id();
        let _g = rt.guard(&id);
        let out = rt.run(&b, &id);
        // The runtime binary ran in the container as `vessel-runtime /evil` and rejected its argument (an exec
        // failure would be 127).
        assert!(
            out.code == Some(1) && out.stderr.contains("subcommand"),
            "the #!/proc/self/exe program did not run the runtime binary in the container:\n{out}"
        );
        let after = std::fs::read(rt.bin()).unwrap();
        let mtime_after = std::fs::metadata(rt.bin()).unwrap().mtime();
        assert!(
            before == after && mtime_before == mtime_after,
            "the host's {} changed after a #!/proc/self/exe container ran:\n{out}",
            rt.bin().display()
        );
    }
}
