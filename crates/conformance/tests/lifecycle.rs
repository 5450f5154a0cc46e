//! Lifecycle operations: create, start, state, kill, delete and what they must (not) touch.
//! Areas of the runtime-tools validation suite: create, start, state, delete, delete_only_create_resources,
//! delete_resources, kill, kill_no_effect, killsig, pidfile, config_updates_without_affect, misc_props.

use std::path::Path;
use std::time::Duration;

use vessel_conformance::*;

fn canon(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

// `create` MUST fail without an id, MUST create a container that has not run its process yet, and MUST
// fail (without touching the existing container) when the id is already taken.
conformance!(create, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.sh("echo ran > /output");
    b.write_config();
    let bundle = b.path().to_string_lossy().into_owned();
    rt.exec(&["create", "--bundle", &bundle])
        .assert_fail("create without an id");
    assert!(
        rt.state_entries().is_empty(),
        "create without an id left state: {:?}",
        rt.state_entries()
    );

    let c = rt.create_container(&b);
    let st = c.state();
    assert_eq!(st["id"], c.id.as_str(), "state id: {st}");
    assert_eq!(st["status"], "created", "state after create: {st}");
    let pid = st["pid"].as_i64().unwrap_or(0);
    assert!(
        host::pid_alive(pid),
        "pid {pid} of a created container is not alive: {st}"
    );
    assert!(
        !b.host_path("/output").exists(),
        "the user process ran during create (before start)"
    );

    rt.create(&b, &c.id)
        .assert_fail("create with an id that already exists");
    let st2 = c.state();
    assert_eq!(
        st2["status"], "created",
        "existing container changed by a duplicate create: {st2}"
    );
    assert_eq!(
        st2["pid"], st["pid"],
        "existing container changed by a duplicate create"
    );
});

// `start` MUST fail without an id and for a container that is not `created` (missing or stopped), MUST
// run the user process exactly once, and a container without `process` MUST NOT start.
conformance!(start, |rt: &Runtime| {
    rt.exec(&["start"]).assert_fail("start without an id");
    rt.start(&rt.new_id())
        .assert_fail("start of a container that does not exist");

    let mut b = Bundle::new();
    b.sh("echo 'process called' >> /output");
    let out = b.host_path("/output");
    let c = rt.create_container(&b);
    assert!(!out.exists(), "process args applied before start");
    c.start().assert_ok("start of a created container");
    c.wait_stopped();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default(),
        "process called\n"
    );

    c.start().assert_fail("start of a stopped container");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default(),
        "process called\n",
        "start of a stopped container had an effect"
    );
    c.delete().assert_ok("delete of a stopped container");

    let mut b2 = Bundle::new();
    b2.remove_key("process");
    let id = rt.new_id();
    let _g = rt.guard(&id);
    if rt.create(&b2, &id).success() {
        rt.start(&id)
            .assert_fail("start of a container whose config has no process");
    }
});

// `state` MUST fail without an id or for an unknown id, and MUST report ociVersion, id, status, pid,
// bundle and annotations through created -> running -> stopped.
conformance!(state, |rt: &Runtime| {
    rt.exec(&["state"]).assert_fail("state without an id");
    rt.state_out(&rt.new_id())
        .assert_fail("state of a container that does not exist");

    let mut b = Bundle::new();
    b.args(&["sleep", "30"]).annotation("org.vessel.test", "state");
    let c = rt.create_container(&b);
    let st = c.state();
    assert!(
        st["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "state has no ociVersion: {st}"
    );
    assert_eq!(st["id"], c.id.as_str());
    assert_eq!(st["status"], "created");
    let pid = st["pid"].as_i64().unwrap_or(0);
    assert!(
        host::pid_alive(pid),
        "state pid {pid} is not a live process: {st}"
    );
    assert_eq!(
        canon(Path::new(st["bundle"].as_str().unwrap_or_default())),
        canon(b.path()),
        "state bundle: {st}"
    );
    assert_eq!(
        st["annotations"],
        json!({"org.vessel.test": "state"}),
        "state annotations: {st}"
    );

    c.start().assert_ok("start");
    let st = c.state();
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["pid"].as_i64(), Some(pid), "pid changed at start: {st}");

    c.kill("KILL").assert_ok("kill");
    let st = c.wait_stopped();
    assert_eq!(st["id"], c.id.as_str());
    c.delete().assert_ok("delete");
    rt.state_out(&c.id).assert_fail("state after delete");
});

// `delete` MUST fail without an id and for a running container (with no effect on it), and MUST remove a
// stopped one.
conformance!(delete, |rt: &Runtime| {
    rt.exec(&["delete"]).assert_fail("delete without an id");
    rt.delete(&rt.new_id())
        .assert_fail("delete of a container that does not exist");

    let mut b = Bundle::new();
    b.args(&["sleep", "30"]);
    let c = rt.create_container(&b);
    c.start().assert_ok("start");
    c.delete().assert_fail("delete of a running container");
    let st = c.state();
    assert_eq!(
        st["status"], "running",
        "delete of a running container had an effect: {st}"
    );
    assert!(host::pid_alive(st["pid"].as_i64().unwrap_or(0)));

    c.kill("KILL").assert_ok("kill");
    c.wait_stopped();
    c.delete().assert_ok("delete of a stopped container");
    rt.state_out(&c.id).assert_fail("state after delete");
    assert_nothing_left(rt, &b, "after delete");
});

// Spec: deleting a container that is not `stopped` (here: `created`) MUST generate an error and have no
// effect. runc 1.1 deliberately deletes a created container (it kills it first), so this fails on runc.
conformance!(delete_created_is_error, runc_differs = "runc deletes a created container; the spec says deleting a container that is not stopped is an error", |rt: &Runtime| {
    let mut b = Bundle::new();
    b.args(&["true"]);
    let c = rt.create_container(&b);
    let out = c.delete();
    let st = rt.state_out(&c.id);
    assert!(
        !out.success() && st.success(),
        "delete of a created container must fail and leave it in place\ndelete:\n{out}\nstate after:\n{st}"
    );
});

// Deleting MUST NOT remove resources the container did not create: a cgroup made by someone else that
// the container's process was moved into survives the delete.
conformance!(delete_only_create_resources, |rt: &Runtime| {
    let pids_mnt = host::cgroup_mounts()
        .v1_dir("pids")
        .map(|p| p.to_path_buf())
        .or_else(|| host::cgroup_mounts().unified.clone())
        .expect("no pids cgroup hierarchy on this host");
    let foreign = pids_mnt.join(format!(
        "vessel-conformance-foreign-{}-{}",
        std::process::id(),
        next_counter()
    ));
    std::fs::create_dir(&foreign).unwrap();
    struct Rmdir(std::path::PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = wait_until(Duration::from_secs(5), || std::fs::remove_dir(&self.0).is_ok());
        }
    }
    let _cleanup = Rmdir(foreign.clone());

    let mut b = Bundle::new();
    b.args(&["true"]);
    let c = rt.create_container(&b);
    std::fs::write(foreign.join("cgroup.procs"), c.pid()).unwrap();
    c.start().assert_ok("start");
    c.wait_stopped();
    c.delete().assert_ok("delete");
    assert!(
        foreign.is_dir(),
        "delete removed a cgroup it did not create: {}",
        foreign.display()
    );
});

// Deleting MUST remove what create made: cgroups (with their limits), state, mounts, processes.
conformance!(delete_resources, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.args(&["true"]).resource("pids", json!({"limit": 1000}));
    let c = rt.create_container(&b);
    let pid = c.pid();
    let dir = host::cgroup_dir_of(&pid, "pids").expect("container has no pids cgroup");
    assert_eq!(
        std::fs::read_to_string(dir.join("pids.max"))
            .unwrap_or_default()
            .trim(),
        "1000",
        "pids.max in {}",
        dir.display()
    );
    c.start().assert_ok("start");
    c.wait_stopped();
    c.delete().assert_ok("delete");
    assert!(!dir.exists(), "cgroup {} survived delete", dir.display());
    assert_nothing_left(rt, &b, "after delete");
});

// `kill` MUST fail without an id and for a container that is neither created nor running, and MUST
// deliver the signal to a created or running container.
conformance!(kill, |rt: &Runtime| {
    rt.exec(&["kill"]).assert_fail("kill without an id");
    rt.kill(&rt.new_id(), "KILL")
        .assert_fail("kill of a container that does not exist");

    let mut b = Bundle::new();
    b.args(&["true"]);
    let c = rt.create_container(&b);
    let pid = c.state()["pid"].as_i64().unwrap_or(0);
    c.kill("KILL").assert_ok("kill of a created container");
    c.wait_stopped();
    assert!(
        wait_until(Duration::from_secs(5), || !host::pid_alive(pid)),
        "pid {pid} survived SIGKILL"
    );
    c.kill("KILL").assert_fail("kill of a stopped container");
    c.delete().assert_ok("delete");

    let mut b2 = Bundle::new();
    b2.args(&["sleep", "30"]);
    let c2 = rt.create_container(&b2);
    c2.start().assert_ok("start");
    c2.kill("KILL").assert_ok("kill of a running container");
    c2.wait_stopped();
});

// A kill of a stopped container MUST NOT change its state.
conformance!(kill_no_effect, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.args(&["true"]);
    let c = rt.create_container(&b);
    c.start().assert_ok("start");
    let before = c.wait_stopped();
    let _ = c.kill("KILL");
    let after = c.state();
    assert_eq!(before, after, "kill of a stopped container changed its state");
});

// `kill ID SIGNAL` delivers the named signal; names with and without SIG and numbers are accepted.
conformance!(killsig, |rt: &Runtime| {
    for (sig, spelling) in [
        ("TERM", "TERM"),
        ("USR1", "SIGUSR1"),
        ("USR2", "12"),
        ("HUP", "SIGHUP"),
    ] {
        let mut b = Bundle::new();
        b.sh(&format!(
            "trap 'touch /got-{sig}; exit 0' {sig}; touch /ready; sleep 30 & wait $!"
        ));
        let c = rt.create_container(&b);
        c.start().assert_ok("start");
        assert!(
            wait_for_file(&b.host_path("/ready")),
            "container never became ready"
        );
        c.kill(spelling).assert_ok(&format!("kill {spelling}"));
        c.wait_stopped();
        assert!(
            b.host_path(&format!("/got-{sig}")).exists(),
            "signal {sig} (given as {spelling:?}) was not delivered"
        );
    }
});

// `create --pid-file F` writes the container's pid (the one `state` reports) to F.
conformance!(pidfile, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.args(&["true"]);
    let pidfile = b.path().join("container.pid");
    let pf = pidfile.to_string_lossy().into_owned();
    let id = rt.new_id();
    let _g = rt.guard(&id);
    rt.create_with(&b, &id, &["--pid-file", &pf])
        .assert_ok("create --pid-file");
    let st = rt.state(&id);
    let written = std::fs::read_to_string(&pidfile).unwrap_or_default();
    assert_eq!(
        written.trim().parse::<i64>().ok(),
        st["pid"].as_i64(),
        "pid file holds {written:?}, state says {st}"
    );
});

// Changes to config.json after create MUST NOT affect the container.
conformance!(config_updates_without_affect, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.sh("echo original > /out; hostname >> /out")
        .hostname("before-update");
    let c = rt.create_container(&b);
    b.write_raw_config(r#"{"ociVersion": "1.0.0"}"#);
    c.start().assert_ok("start after config.json was replaced");
    c.wait_stopped();
    assert_eq!(
        std::fs::read_to_string(b.host_path("/out")).unwrap_or_default(),
        "original\nbefore-update\n"
    );
    c.delete().assert_ok("delete after config.json was replaced");
});

// Unknown annotation keys and unknown properties MUST NOT cause an error.
conformance!(misc_props, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.args(&["echo", "ran"])
        .annotation(&format!("org.vessel.unknown-{}", next_counter()), "");
    b.config_mut()["unknownTopLevel"] = json!("unknown");
    b.config_mut()["process"]["unknownProcessField"] = json!({"x": 1});
    let out = rt.run_ok(&b);
    assert_eq!(out.stdout, "ran\n", "the container did not run\n{out}");
});

// Invalid values MUST generate an error: an ociVersion that is not SemVer is rejected.
// runc 1.1 does not validate ociVersion, so this fails on runc.
conformance!(
    misc_props_invalid_version,
    runc_differs = "runc 1.1.5 does not check ociVersion",
    |rt: &Runtime| {
        let mut b = Bundle::new();
        b.args(&["true"]).oci_version("invalid");
        let id = rt.new_id();
        let _g = rt.guard(&id);
        rt.run(&b, &id).assert_fail("run with ociVersion \"invalid\"");
        assert_nothing_left(rt, &b, "after a rejected config");
    }
);

// vessel only (runc's `start` returns before its init execs): once `start` returns, the container's
// process is its program, not the runtime's init, so a signal sent at once reaches the program.
#[test]
fn start_returns_once_the_program_runs() {
    let rt = Runtime::vessel();
    // A seccomp filter of many argument rules widens the window between the init's byte on the exec fifo
    // and its execve (the filter is loaded in it), so a `start` that returned at the byte is seen.
    let rules: Vec<serde_json::Value> = (0..400)
        .map(|n| {
            serde_json::json!({ "names": ["getpriority"], "action": "SCMP_ACT_ERRNO",
            "args": [{ "index": 0, "value": 1000 + n, "op": "SCMP_CMP_EQ" }] })
        })
        .collect();
    for _ in 0..20 {
        let mut b = Bundle::new();
        b.args(&["sleep", "30"]);
        b.config_mut()["linux"]["seccomp"] =
            serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules });
        b.write_config();
        let c = rt.create_container(&b);
        let pid = c.state()["pid"].as_i64().unwrap_or(0);
        c.start().assert_ok("start");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        assert!(
            exe.ends_with("/bin/busybox") || exe.ends_with("/bin/sleep"),
            "right after start, pid {pid} runs {exe:?}, not the container's program"
        );
    }
}
