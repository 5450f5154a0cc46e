//! podman 4 with vessel-runtime as its OCI runtime (`--runtime <wrapper>`).
//!
//! Each test has its own podman storage, lock files, cgroup parent and runtime state (see
//! [`Podman`]), imports the busybox image with `podman import`, and checks the wrapper's log to prove
//! that vessel-runtime ran its containers.

use std::time::Duration;

use vessel_conformance::host;
use vessel_conformance::interop::{Podman, PtySession};
use vessel_conformance::tempdir::TempDir;
use vessel_conformance::wait_until;

const T: Duration = Duration::from_secs(10);

/// A `Name:` hex field of /proc/self/status text (capability sets) as a number.
fn status_hex(status: &str, field: &str) -> u64 {
    let v = host::status_field(status, field)
        .unwrap_or_else(|| panic!("no {field} in the container's /proc/self/status:\n{status}"));
    u64::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{field} {v:?} is not hex: {e}"))
}

/// The one line of `out` that starts with `prefix`.
fn line_with<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"))
}

#[test]
fn run_rm_echo_hello() {
    let p = Podman::new();
    let out = p.run_rm(&[], &["echo", "hello"]);
    out.assert_ok("podman run --rm IMAGE echo hello");
    assert_eq!(
        out.stdout, "hello\n",
        "podman run --rm printed the wrong output\n{out}"
    );
    p.wrapper().wait_for_verbs(&["create", "start", "delete"], T);
}

#[test]
fn run_detached_exec_and_stop() {
    let p = Podman::new();
    let id = p.run_detached(
        &[],
        &[
            "sh",
            "-c",
            "trap 'exit 3' TERM; echo ready > /tmp/ready; while :; do sleep 0.1; done",
        ],
    );
    let ready = wait_until(T, || {
        p.run(&["exec", &id, "cat", "/tmp/ready"]).stdout == "ready\n"
    });
    assert!(
        ready,
        "the detached container never wrote /tmp/ready (seen through podman exec)"
    );

    let out = p.ok(
        &[
            "exec",
            &id,
            "sh",
            "-c",
            "echo exec-ok; id -u; cat /proc/1/cmdline",
        ],
        "podman exec",
    );
    let lines = out.lines();
    assert_eq!(
        lines.first().copied(),
        Some("exec-ok"),
        "podman exec output\n{out}"
    );
    assert_eq!(
        lines.get(1).copied(),
        Some("0"),
        "podman exec runs as root by default\n{out}"
    );
    assert!(
        out.stdout.contains("trap 'exit 3' TERM"),
        "podman exec does not see the container's pid 1 (not in its pid namespace)\n{out}"
    );
    assert_eq!(p.inspect(&id, "{{.State.Status}}"), "running");

    // vessel-runtime itself knows the container, with podman's pid.
    let st = p
        .vessel_state(&id)
        .expect("vessel-runtime state of the podman container");
    assert_eq!(st["status"], "running", "vessel-runtime state: {st}");
    assert_eq!(
        st["pid"].to_string(),
        p.inspect(&id, "{{.State.Pid}}"),
        "vessel-runtime state: {st}"
    );

    p.ok(&["stop", "--time", "20", &id], "podman stop");
    assert_eq!(p.inspect(&id, "{{.State.Status}}"), "exited");
    assert_eq!(
        p.inspect(&id, "{{.State.ExitCode}}"),
        "3",
        "the container's TERM trap exits 3: podman stop must deliver SIGTERM through the runtime"
    );
    p.wrapper()
        .wait_for_verbs(&["create", "start", "exec", "kill", "delete"], T);
    p.wrapper().assert_invoked_with("kill", "15");
    p.ok(&["rm", &id], "podman rm");
}

#[test]
fn run_interactive_tty() {
    let p = Podman::new();
    let args = p.run_args(
        &["--rm", "-it"],
        &[],
        &["sh", "-c", "tty; read x; echo got-$x; exit 7"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = PtySession::spawn(p.command(&args));
    s.expect("the container's tty name", Duration::from_secs(30), |t| {
        t.lines().any(|l| l.trim().starts_with("/dev/pts/"))
    });
    let transcript = s.transcript();
    let tty = line_with(&transcript, "/dev/pts/").trim();
    assert!(
        tty["/dev/pts/".len()..].chars().all(|c| c.is_ascii_digit()) && tty.len() > "/dev/pts/".len(),
        "`tty` inside printed {tty:?}, not /dev/pts/N; transcript:\n{transcript}"
    );
    s.send("typed-input\r");
    s.expect(
        "the typed input echoed back by the container",
        Duration::from_secs(10),
        |t| t.contains("got-typed-input"),
    );
    let status = s
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("podman run -it did not exit; transcript:\n{}", s.transcript()));
    assert_eq!(
        status.code(),
        Some(7),
        "podman run -it exit status; transcript:\n{}",
        s.transcript()
    );
    p.wrapper().wait_for_verbs(&["create", "start", "delete"], T);
    p.wrapper().assert_invoked_with("create", "--console-socket");
}

/// The counter the pause test's container writes to /out/c, read from the host.
fn counter(dir: &TempDir) -> Option<u64> {
    std::fs::read_to_string(dir.path().join("c"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn pause_and_unpause() {
    let p = Podman::new();
    let out_dir = TempDir::new("podman-pause-out");
    let volume = format!("{}:/out", out_dir.path().display());
    let id = p.run_detached(
        &["-v", &volume],
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /out/c.new; mv /out/c.new /out/c; sleep 0.05; done",
        ],
    );
    assert!(
        wait_until(T, || counter(&out_dir).unwrap_or(0) > 2),
        "the counter never advanced"
    );

    p.ok(&["pause", &id], "podman pause");
    assert_eq!(
        p.inspect(&id, "{{.State.Status}} {{.State.Paused}}"),
        "paused true"
    );
    let st = p
        .vessel_state(&id)
        .expect("vessel-runtime state of the paused container");
    assert_eq!(st["status"], "paused", "vessel-runtime state: {st}");
    let frozen = counter(&out_dir).expect("counter while paused");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        counter(&out_dir),
        Some(frozen),
        "the counter advanced while the container was paused"
    );

    p.ok(&["unpause", &id], "podman unpause");
    assert_eq!(
        p.inspect(&id, "{{.State.Status}} {{.State.Paused}}"),
        "running false"
    );
    assert!(
        wait_until(T, || counter(&out_dir).unwrap_or(0) > frozen),
        "the counter did not advance after unpause (stuck at {frozen})"
    );
    p.wrapper()
        .wait_for_verbs(&["create", "start", "pause", "resume"], T);
    p.ok(&["rm", "--force", "--time", "0", &id], "podman rm -f");
}

#[test]
fn memory_limit() {
    let p = Podman::new();
    let id = p.run_detached(&["--memory", "64m"], &["sleep", "60"]);
    let inside = p.ok(
        &["exec", &id, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
        "exec cat",
    );
    assert_eq!(
        inside.stdout.trim(),
        "67108864",
        "memory.limit_in_bytes inside\n{inside}"
    );

    let pid = p.inspect(&id, "{{.State.Pid}}");
    let dir = host::cgroup_dir_of(&pid, "memory").expect("the container's memory cgroup on the host");
    assert!(
        dir.to_string_lossy()
            .contains(p.cgroup_parent().trim_start_matches('/')),
        "container cgroup {} is not under podman's --cgroup-parent {}",
        dir.display(),
        p.cgroup_parent()
    );
    let host_limit = std::fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap();
    assert_eq!(
        host_limit.trim(),
        "67108864",
        "memory.limit_in_bytes in {}",
        dir.display()
    );
    p.ok(&["rm", "--force", "--time", "0", &id], "podman rm -f");
    p.wrapper().wait_for_verbs(&["create", "start", "delete"], T);
}

#[test]
fn pids_limit() {
    let p = Podman::new();
    let out = p.run_rm(&["--pids-limit", "42"], &["cat", "/sys/fs/cgroup/pids/pids.max"]);
    out.assert_ok("podman run --pids-limit 42");
    assert_eq!(out.stdout.trim(), "42", "pids.max inside the container\n{out}");
    p.wrapper().wait_for_verbs(&["create", "start", "delete"], T);
}

#[test]
fn cpus_quota() {
    let p = Podman::new();
    let out = p.run_rm(
        &["--cpus", "0.5"],
        &[
            "cat",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
        ],
    );
    out.assert_ok("podman run --cpus 0.5");
    assert_eq!(
        out.lines(),
        ["50000", "100000"],
        "cfs quota and period inside the container\n{out}"
    );
    p.wrapper().wait_for_verbs(&["create", "start", "delete"], T);
}

#[test]
fn user_1000() {
    let p = Podman::new();
    let out = p.run_rm(&["--user", "1000:1000"], &["sh", "-c", "id -u; id -g; id -G"]);
    out.assert_ok("podman run --user 1000:1000");
    assert_eq!(
        out.lines(),
        ["1000", "1000", "1000"],
        "uid, gid and groups inside\n{out}"
    );
    p.wrapper().wait_for_verbs(&["create", "start", "delete"], T);
}

const CAPS_SCRIPT: &str =
    "grep Cap /proc/self/status; touch /tmp/f; chown 1000 /tmp/f 2>/dev/null && echo chown-ok || echo chown-denied";

#[test]
fn cap_drop_all() {
    let p = Podman::new();
    let out = p.run_rm(&["--cap-drop", "ALL"], &["sh", "-c", CAPS_SCRIPT]);
    out.assert_ok("podman run --cap-drop ALL");
    for set in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(
            status_hex(&out.stdout, set),
            0,
            "{set} with --cap-drop ALL\n{out}"
        );
    }
    assert!(
        out.stdout.contains("chown-denied"),
        "chown worked without CAP_CHOWN\n{out}"
    );
    p.wrapper().wait_for_verbs(&["create", "start", "delete"], T);
}

#[test]
fn cap_drop_chown() {
    let p = Podman::new();
    let default = p.run_rm(&[], &["sh", "-c", CAPS_SCRIPT]);
    default.assert_ok("podman run with default capabilities");
    let dropped = p.run_rm(&["--cap-drop", "CHOWN"], &["sh", "-c", CAPS_SCRIPT]);
    dropped.assert_ok("podman run --cap-drop CHOWN");
    let (d, c) = (
        status_hex(&default.stdout, "CapEff"),
        status_hex(&dropped.stdout, "CapEff"),
    );
    assert_eq!(
        d & 1,
        1,
        "CAP_CHOWN (bit 0) missing from podman's default CapEff {d:#x}"
    );
    assert_eq!(
        c,
        d & !1,
        "CapEff with --cap-drop CHOWN is {c:#x}; expected the default {d:#x} minus bit 0"
    );
    assert_eq!(
        status_hex(&dropped.stdout, "CapBnd") & 1,
        0,
        "CAP_CHOWN still bounding\n{dropped}"
    );
    assert!(
        default.stdout.contains("chown-ok"),
        "chown failed with default caps\n{default}"
    );
    assert!(
        dropped.stdout.contains("chown-denied"),
        "chown worked after --cap-drop CHOWN\n{dropped}"
    );
    p.wrapper()
        .wait_for_verbs(&["create", "start", "delete", "create", "start", "delete"], T);
}

#[test]
fn read_only_rootfs() {
    let p = Podman::new();
    let script = "if touch /rofile 2>/dev/null; then echo root-writable; else echo root-read-only; fi; \
                  echo tmp-ok > /tmp/t && cat /tmp/t; echo shm-ok > /dev/shm/s && cat /dev/shm/s; \
                  cat /proc/self/mountinfo";
    let out = p.run_rm(&["--read-only"], &["sh", "-c", script]);
    out.assert_ok("podman run --read-only");
    let lines = out.lines();
    assert_eq!(
        lines.first().copied(),
        Some("root-read-only"),
        "writing / with --read-only\n{out}"
    );
    assert!(
        lines.contains(&"tmp-ok"),
        "/tmp is not writable with --read-only\n{out}"
    );
    assert!(
        lines.contains(&"shm-ok"),
        "/dev/shm is not writable with --read-only\n{out}"
    );
    let root = host::parse_mountinfo(&out.stdout)
        .into_iter()
        .rfind(|m| m.mount_point.as_os_str() == "/")
        .unwrap_or_else(|| panic!("no / in the container's mountinfo\n{out}"));
    assert!(root.has_option("ro"), "/ is not mounted ro: {}", root.line);
    p.wrapper().wait_for_verbs(&["create", "start", "delete"], T);
}

#[test]
fn info_and_version_accept_vessel_version() {
    let p = Podman::new();
    let info = p.ok(&["info", "--format", "json"], "podman info");
    let v: serde_json::Value = serde_json::from_str(&info.stdout)
        .unwrap_or_else(|e| panic!("podman info is not JSON ({e})\n{info}"));
    let rt = &v["host"]["ociRuntime"];
    assert_eq!(
        rt["path"],
        p.wrapper().path().display().to_string(),
        "podman info ociRuntime: {rt}"
    );
    let version = rt["version"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("vessel-runtime version ") && version.contains("spec: "),
        "podman info shows the runtime version {version:?}"
    );
    let ver = p.ok(&["version"], "podman version");
    assert!(ver.stdout.contains("Version:"), "podman version output\n{ver}");
    p.wrapper().wait_for_verbs(&["--version"], T);
}
