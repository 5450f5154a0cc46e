//! Faults: bad requests, a killed supervisor, a killed daemon (once, and 200 times in a loop of work), a
//! host restart, a flood of output, a container over its memory limit, two daemons side by side.

mod support;

use std::time::Duration;

use support::{Daemon, IMAGE};

#[test]
fn bad_requests_get_a_4xx_with_one_line_and_change_nothing() {
    let d = Daemon::start("badreq");
    d.ok(&["create", "--name", "keep", IMAGE, "sleep", "30"]);
    let before = d.json("GET", "/1.0/instances?all=true", "");
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("POST", "/1.0/instances", "{not json", 400, "Invalid request body"),
        (
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","memroy":1}"#,
            400,
            "unknown field `memroy`",
        ),
        (
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","limits":{"memory":5}}"#,
            400,
            "minimum",
        ),
        (
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","limits":{"cpus":-1}}"#,
            400,
            "cpus",
        ),
        (
            "POST",
            "/1.0/instances?pull=never",
            r#"{"image":"no/such"}"#,
            404,
            "not in the image store",
        ),
        (
            "POST",
            "/1.0/instances?pull=sometimes",
            r#"{"image":"t/busybox"}"#,
            400,
            "pull",
        ),
        (
            "POST",
            "/1.0/images/pull",
            r#"{"reference":"UPPER/Case:::"}"#,
            400,
            "Invalid image reference",
        ),
        ("GET", "/1.0/operations/nosuch", "", 404, "No operation"),
        (
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","name":"keep"}"#,
            409,
            "already in use",
        ),
        (
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","name":"a/b"}"#,
            400,
            "Invalid name",
        ),
        (
            "POST",
            "/1.0/instances",
            r#"{"image":"","kind":"vm"}"#,
            400,
            "or its own --kernel",
        ),
        (
            "PUT",
            "/1.0/instances/keep/state",
            r#"{"action":"fly"}"#,
            400,
            "Unknown action",
        ),
        (
            "PUT",
            "/1.0/instances/keep/state",
            r#"{"action":"stop","force":1}"#,
            400,
            "unknown field",
        ),
        (
            "PUT",
            "/1.0/instances/keep/state",
            r#"{"action":"pause"}"#,
            409,
            "must be running",
        ),
        (
            "PUT",
            "/1.0/instances/nosuch/state",
            r#"{"action":"start"}"#,
            404,
            "No such instance",
        ),
        (
            "PATCH",
            "/1.0/instances/keep",
            r#"{"limits":{"pids":0}}"#,
            400,
            "pids",
        ),
        ("GET", "/1.0/instances?all=maybe", "", 400, "all"),
        (
            "GET",
            "/1.0/instances?filter=colour%3Dred",
            "",
            400,
            "Unknown filter",
        ),
        ("GET", "/1.0/instances/keep/logs?tail=x", "", 400, "Invalid tail"),
        ("POST", "/1.0/instances/keep/attach", "", 400, "Upgrade"),
        ("GET", "/1.0/nothing", "", 404, "No such API endpoint"),
    ];
    for (method, path, body, status, needle) in cases {
        let (got, text) = d.api(method, path, body);
        assert_eq!(got, *status, "{method} {path} {body}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle) && !msg.contains('\n'),
            "{method} {path}: {msg}"
        );
    }
    assert_eq!(
        d.json("GET", "/1.0/instances?all=true", ""),
        before,
        "a bad request changed the store"
    );
    d.assert_clean_after_rm_all();
}

#[test]
fn a_killed_supervisor_leaves_an_exit_with_unknown_status_and_no_hung_client() {
    let d = Daemon::start("supkill");
    d.ok(&["run", "-d", "--name", "s", IMAGE, "sleep", "300"]);
    let waiter = d
        .cmd(&["wait", "s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = supervisor_pid(&d, "s");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    d.until(10, "the instance to be recorded as exited", || {
        d.status("s") == "exited"
    });
    let st = d.inspect("s");
    assert!(st["state"]["exit_code"].is_null(), "{st}");
    // A client that waited is answered, not hung.
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unknown");
    assert_eq!(d.ok(&["wait", "s"]).trim(), "unknown");
    // Its container went with it: nothing of it runs.
    d.assert_clean_after_rm_all();
}

fn supervisor_pid(d: &Daemon, name: &str) -> i32 {
    let id = d.inspect(name)["id"].as_str().unwrap().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmd);
        let argv0 = text.split('\0').next().unwrap_or("");
        if argv0.ends_with("vessel-supervisor")
            && text.contains(&id)
            && (text.contains("\0run\0") || text.contains("\0serve\0"))
        {
            return e.file_name().to_string_lossy().parse().unwrap();
        }
    }
    panic!("no supervisor for {name}");
}

#[test]
fn instances_outlive_a_killed_daemon_and_are_managed_again_after_it_restarts() {
    let mut d = Daemon::start("reattach");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "long",
        IMAGE,
        "sh",
        "-c",
        "echo one; sleep 1; echo two; sleep 300",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "short",
        IMAGE,
        "sh",
        "-c",
        "sleep 1; exit 9",
    ]);
    d.kill9();
    std::thread::sleep(Duration::from_millis(2000));
    d.spawn();
    assert_eq!(d.status("long"), "running");
    // `short` exited while no daemon ran: its supervisor recorded the code.
    d.until(10, "short's exit", || d.status("short") == "exited");
    assert_eq!(d.inspect("short")["state"]["exit_code"], 9);
    let logs = d.ok(&["logs", "long"]);
    assert!(logs.contains("one") && logs.contains("two"), "{logs}");
    d.ok(&["exec", "long", "true"]);
    d.ok(&["stop", "-t", "1", "long"]);
    assert_eq!(d.status("long"), "exited");
    // A second daemon on the same root is refused while the first runs.
    let out = std::process::Command::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_vessel")).with_file_name("vesseld"),
    )
    .arg("--root")
    .arg(&d.root)
    .arg("--run-dir")
    .arg(&d.run)
    .arg("--name")
    .arg(&d.name)
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Another vesseld already runs"),
        "{err}"
    );
    d.assert_clean_after_rm_all();
}

#[test]
fn host_restart_brings_back_instances_whose_policy_says_so() {
    let mut d = Daemon::start("reboot");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "--memory",
        "32m",
        IMAGE,
        "sleep",
        "300",
    ]);
    d.ok(&["run", "-d", "--name", "never", IMAGE, "sleep", "300"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "unless",
        "--restart",
        "unless-stopped",
        IMAGE,
        "sleep",
        "300",
    ]);
    d.ok(&["stop", "-t", "0", "unless"]);
    d.kill9();
    // A reboot, as far as a test can make one: every supervisor and container killed, mounts gone, the
    // runtime's state (tmpfs on a real host) lost.
    let procs = d.leftovers();
    for line in procs.iter().filter(|l| l.starts_with("process ")) {
        let pid: i32 = line["process ".len()..]
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    for ctl in ["memory", "pids", "freezer", "cpu", "blkio", "devices", "cpuset"] {
        let dir = std::path::Path::new("/sys/fs/cgroup").join(ctl).join(&d.name);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            for pid in std::fs::read_to_string(e.path().join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid.parse().unwrap()),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        if let Some(mp) = line
            .split(' ')
            .nth(4)
            .filter(|m| m.starts_with(&*d.root.to_string_lossy()))
        {
            let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(d.run.clone());
    d.spawn();
    d.until(15, "the always instance to run again", || {
        d.status("always") == "running"
    });
    assert_eq!(d.status("never"), "exited");
    assert!(d.inspect("never")["state"]["exit_code"].is_null());
    assert_eq!(d.status("unless"), "exited");
    // With its limits.
    let id = d.inspect("always")["id"].as_str().unwrap().to_string();
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/{}/{id}/memory.limit_in_bytes",
        d.name
    ))
    .unwrap();
    assert_eq!(limit.trim(), (32u64 << 20).to_string());
    d.assert_clean_after_rm_all();
}

#[test]
fn output_floods_stay_within_the_log_bound() {
    // 1 MiB files, 3 of them: at most 3 MiB of log whatever the instance writes.
    let d = Daemon::start_with("flood", &["--log-max-size", "1048576", "--log-max-files", "3"]);
    let out = d.vessel(&[
        "run",
        "--name",
        "flood",
        IMAGE,
        "sh",
        "-c",
        "head -c 1000000000 /dev/zero | tr '\\0' 'x' | fold -w 1000; echo done",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = d.inspect("flood")["id"].as_str().unwrap().to_string();
    let dir = d.root.join("instances").join(&id);
    let total: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(total <= 3 * 1048576 + 4096, "log grew to {total} bytes");
    assert!(total > 2 * 1048576, "the log lost too much: {total} bytes");
    assert!(d.ok(&["logs", "--tail", "1", "flood"]).contains("done"));
    // The daemon answered throughout.
    assert_eq!(d.api("GET", "/1.0", "").0, 200);
    d.assert_clean_after_rm_all();
}

#[test]
fn memory_and_pids_limits_are_enforced_and_oom_is_reported() {
    let d = Daemon::start("oom");
    let out = d.vessel(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        IMAGE,
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' 'y'); echo survived",
    ]);
    assert!(!out.status.success());
    let st = d.inspect("hog");
    assert_eq!(st["state"]["oom_killed"], true, "{st}");
    // A fork bomb stops at its pids limit; the failed forks are counted by the cgroup.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "forker",
        "--pids-limit",
        "8",
        IMAGE,
        "sh",
        "-c",
        "(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; exec sleep 300",
    ]);
    let id = d.inspect("forker")["id"].as_str().unwrap().to_string();
    let cg = format!("/sys/fs/cgroup/pids/{}/{id}", d.name);
    d.until(10, "the fork loop to hit its limit", || {
        std::fs::read_to_string(format!("{cg}/pids.events"))
            .unwrap_or_default()
            .trim()
            != "max 0"
    });
    let current: u64 = std::fs::read_to_string(format!("{cg}/pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(current <= 8, "{current} processes under a limit of 8");
    let stats: serde_json::Value =
        serde_json::from_str(&d.ok(&["--format", "json", "stats", "--no-stream", "forker"])).unwrap();
    assert_eq!(stats[0]["pids_limit"], 8, "{stats}");
    assert_eq!(d.api("GET", "/1.0", "").0, 200);
    d.assert_clean_after_rm_all();
}

#[test]
fn two_daemons_side_by_side_keep_to_their_own() {
    let a = Daemon::start("sidea");
    let b = Daemon::start("sideb");
    a.ok(&["run", "-d", "--name", "same", IMAGE, "sleep", "300"]);
    b.ok(&["run", "-d", "--name", "same", IMAGE, "sleep", "300"]);
    assert_eq!(a.ok(&["ps", "-q"]).lines().count(), 1);
    assert_eq!(b.ok(&["ps", "-q"]).lines().count(), 1);
    let ida = a.inspect("same")["id"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&format!("/sys/fs/cgroup/pids/{}/{ida}", a.name)).exists());
    a.ok(&["rm", "-f", "same"]);
    assert_eq!(b.status("same"), "running");
    b.assert_clean_after_rm_all();
    a.assert_clean_after_rm_all();
}
