//! POSIX-platform hooks: order, timing, the state on stdin, env, timeouts and failure handling.
//! Areas: hooks, hooks_stdin, prestart, prestart_fail, poststart, poststart_fail, poststop,
//! poststop_fail.
//!
//! Host hooks run the rootfs's busybox by its host path and write into files in the rootfs, which the
//! test reads from the host.

use std::path::Path;
use std::time::{Duration, Instant};

use vessel_conformance::*;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn log_line(b: &Bundle, name: &str) -> String {
    format!("echo {name} >> {}", b.host_path("/hooklog").display())
}

// Every hook kind runs at its step of the lifecycle (runtime-spec lifecycle steps 3-13), in the listed order within a kind:
// prestart and createRuntime and createContainer during create, startContainer (in the container)
// and poststart during start, poststop during delete.
conformance!(
    hooks,
    runc_differs = "runc 1.1.5 runs poststart hooks during create, not start",
    |rt: &Runtime| {
        let mut b = Bundle::new();
        for kind in [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop",
        ] {
            for n in 1..=2 {
                let script = log_line(&b, &format!("{kind}-{n}"));
                b.add_sh_hook(kind, &script);
            }
        }
        for n in 1..=2 {
            b.add_hook(
                "startContainer",
                "/bin/sh",
                &["sh", "-c", &format!("echo startContainer-{n} >> /hooklog")],
                Some(20),
            );
        }
        b.sh("echo process >> /process-ran");
        let log = b.host_path("/hooklog");

        let c = rt.create_container(&b);
        assert_eq!(
        read(&log),
        "prestart-1\nprestart-2\ncreateRuntime-1\ncreateRuntime-2\ncreateContainer-1\ncreateContainer-2\n",
        "hooks run by create"
    );
        c.start().assert_ok("start");
        assert_eq!(
        read(&log),
        "prestart-1\nprestart-2\ncreateRuntime-1\ncreateRuntime-2\ncreateContainer-1\ncreateContainer-2\n\
         startContainer-1\nstartContainer-2\npoststart-1\npoststart-2\n",
        "hooks run by start (before it returns)"
    );
        c.wait_stopped();
        assert!(b.host_path("/process-ran").exists(), "the process did not run");
        c.delete().assert_ok("delete");
        assert_eq!(
        read(&log),
        "prestart-1\nprestart-2\ncreateRuntime-1\ncreateRuntime-2\ncreateContainer-1\ncreateContainer-2\n\
         startContainer-1\nstartContainer-2\npoststart-1\npoststart-2\npoststop-1\npoststop-2\n",
        "hooks run by delete"
    );
    }
);

// Each hook gets the container's state on stdin: ociVersion, id, bundle, pid, annotations and the status
// of its step.
conformance!(
    hooks_stdin,
    runc_differs = "runc 1.1.5 runs poststart hooks during create, not start",
    |rt: &Runtime| {
        let mut b = Bundle::new();
        b.annotation("org.vessel.hook-test", "hook stdin test");
        for kind in ["prestart", "createRuntime", "poststart", "poststop"] {
            let script = format!("cat > {}", b.host_path(&format!("/state-{kind}.json")).display());
            b.add_sh_hook(kind, &script);
        }
        b.args(&["true"]);
        let c = rt.create_container(&b);
        let pid = c.state()["pid"].clone();
        c.start().assert_ok("start");
        c.wait_stopped();
        c.delete().assert_ok("delete");

        let bundle = std::fs::canonicalize(b.path()).unwrap();
        let mut errors = Vec::new();
        for (kind, statuses) in [
            ("prestart", &["creating", "created"][..]),
            ("createRuntime", &["creating", "created"][..]),
            ("poststart", &["running"][..]),
            ("poststop", &["stopped"][..]),
        ] {
            let text = read(&b.host_path(&format!("/state-{kind}.json")));
            let st: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(format!("{kind}: no JSON state on stdin ({e}): {text:?}"));
                    continue;
                }
            };
            let got_bundle = std::fs::canonicalize(st["bundle"].as_str().unwrap_or("/nonexistent")).ok();
            let checks = [
                ("id", st["id"] == c.id.as_str()),
                (
                    "ociVersion",
                    st["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
                ),
                ("bundle", got_bundle.as_deref() == Some(bundle.as_path())),
                (
                    "annotations",
                    st["annotations"]["org.vessel.hook-test"] == "hook stdin test",
                ),
                ("status", statuses.iter().any(|s| st["status"] == *s)),
                ("pid", kind == "poststop" || st["pid"] == pid),
            ];
            for (what, ok) in checks {
                if !ok {
                    errors.push(format!(
                        "{kind}: wrong {what} in {st} (want status in {statuses:?}, pid {pid})"
                    ));
                }
            }
        }
        assert!(errors.is_empty(), "hook stdin state:\n{}", errors.join("\n"));
    }
);

// prestart hooks run on the host after the container's namespaces exist and before the user process,
// with the hook's env and args.
conformance!(prestart, |rt: &Runtime| {
    let mut b = Bundle::new();
    let report = b.host_path("/prestart-report");
    let ran = b.host_path("/process-ran");
    let script = format!(
        r#"st=$(cat); pid=$(echo "$st" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p');
           echo "pid=$pid" > {r};
           [ "$(readlink /proc/$pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] && echo netns=new >> {r};
           [ -e {ran} ] && echo process=ran >> {r} || echo process=not-yet >> {r};
           echo "env=$HOOK_VAR arg0=$0 arg1=$1" >> {r}"#,
        r = report.display(),
        ran = ran.display()
    );
    let sh = b.host_sh();
    b.config_mut()["hooks"] = json!({"prestart": [{
        "path": sh, "args": ["sh", "-c", script, "hook-arg0", "hook-arg1"],
        "env": ["HOOK_VAR=hook-env"], "timeout": 20
    }]});
    b.sh("touch /process-ran");
    let c = rt.create_container(&b);
    let pid = c.pid();
    c.start().assert_ok("start");
    c.wait_stopped();
    let r = read(&report);
    assert!(r.contains(&format!("pid={pid}\n")), "prestart report:\n{r}");
    assert!(
        r.contains("netns=new"),
        "the container's namespaces did not exist yet:\n{r}"
    );
    assert!(
        r.contains("process=not-yet"),
        "the user process ran before prestart:\n{r}"
    );
    assert!(
        r.contains("env=hook-env arg0=hook-arg0 arg1=hook-arg1"),
        "hook env/args:\n{r}"
    );
});

// A failing prestart hook MUST make create fail, the user process MUST NOT run, and the container
// MUST be gone (lifecycle continues at delete). A hook exceeding its timeout is a failure too.
conformance!(prestart_fail, |rt: &Runtime| {
    for case in ["false", "timeout"] {
        let mut b = Bundle::new();
        if case == "false" {
            let f = b.host_path("/bin/false").to_string_lossy().into_owned();
            b.add_hook("prestart", &f, &["false"], None);
        } else {
            let sh = b.host_sh();
            b.add_hook("prestart", &sh, &["sh", "-c", "sleep 30"], Some(1));
        }
        b.sh("touch /output");
        let id = rt.new_id();
        let g = rt.guard(&id);
        let t0 = Instant::now();
        let out = rt.create(&b, &id);
        out.assert_fail(&format!("create with a failing prestart hook ({case})"));
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "hook timeout not enforced: {:?}",
            t0.elapsed()
        );
        let _ = rt.start(&id);
        assert!(
            !b.host_path("/output").exists(),
            "the process ran after a failed prestart hook"
        );
        rt.state_out(&id)
            .assert_fail("state of a container whose prestart hook failed");
        drop(g);
        assert_nothing_left(rt, &b, "after a failed prestart hook");
    }
});

// poststart hooks run after the user process started and before `start` returns, with state
// `running`.
conformance!(
    poststart,
    runc_differs = "runc 1.1.5 runs poststart hooks during create, not start",
    |rt: &Runtime| {
        let mut b = Bundle::new();
        let st_file = b.host_path("/poststart.json");
        let script = format!(
            "cat > {}; echo 'post-start called' >> {}",
            st_file.display(),
            b.host_path("/output").display()
        );
        b.add_sh_hook("poststart", &script);
        // The process waits (bounded) for the hook, so it is running while the hook runs.
        b.sh("echo 'process called' >> /output; i=0; while [ ! -s /poststart.json ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done");
        let c = rt.create_container(&b);
        // Read before start: the process exits as soon as the hook has written its state, and
        // a stopped container reports no pid.
        let pid = c.pid();
        assert_eq!(
            read(&b.host_path("/output")),
            "",
            "the poststart hook or the process ran during create (before start)"
        );
        c.start().assert_ok("start");
        let st: Value = serde_json::from_str(&read(&st_file))
            .unwrap_or_else(|_| panic!("poststart hook had not run when start returned"));
        assert_eq!(st["status"], "running", "poststart state: {st}");
        assert_eq!(st["pid"].as_i64().map(|p| p.to_string()), Some(pid));
        c.wait_stopped();
        let out = read(&b.host_path("/output"));
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort();
        assert_eq!(lines, ["post-start called", "process called"], "{out}");
    }
);

// A failing poststart hook (runtime-spec lifecycle step 9): `start` MUST generate an error, the
// container MUST be stopped, and the lifecycle continues at destroy; nothing is left after delete.
// (Older spec versions asked for a warning only; runtime-tools still tests that.)
conformance!(
    poststart_fail,
    runc_differs = "runc 1.1.5 runs poststart hooks during create, not start",
    |rt: &Runtime| {
        let mut b = Bundle::new();
        let f = b.host_path("/bin/false").to_string_lossy().into_owned();
        b.add_hook("poststart", &f, &["false"], None);
        b.args(&["sleep", "30"]);
        let c = rt.create_container(&b);
        let pid = c.state()["pid"].as_i64().unwrap_or(0);
        c.start().assert_fail("start with a failing poststart hook");
        assert!(
            wait_until(Duration::from_secs(10), || !host::pid_alive(pid)),
            "container process {pid} still running after its poststart hook failed"
        );
        if let Some(status) = c.status() {
            assert_eq!(status, "stopped", "container state after a failed poststart hook");
        }
        drop(c);
        assert_nothing_left(rt, &b, "after a failed poststart hook");
    }
);

// poststop hooks run at delete (not before), with the state on stdin, and nothing is left afterwards.
conformance!(poststop, |rt: &Runtime| {
    let mut b = Bundle::new();
    let st_file = b.host_path("/poststop.json");
    let script = format!("cat > {}", st_file.display());
    b.add_sh_hook("poststop", &script);
    b.args(&["true"]);
    let c = rt.create_container(&b);
    c.start().assert_ok("start");
    c.wait_stopped();
    assert!(!st_file.exists(), "poststop ran before delete");
    c.delete().assert_ok("delete");
    let st: Value = serde_json::from_str(&read(&st_file))
        .unwrap_or_else(|_| panic!("poststop hook did not run at delete"));
    assert_eq!(st["id"], c.id.as_str());
    assert!(st["status"].as_str().is_some_and(|s| !s.is_empty()), "{st}");
    drop(c);
    assert_nothing_left(rt, &b, "after delete with poststop hooks");
});

// A failing poststop hook: a warning, and the remaining hooks and the delete continue. runc 1.1 stops
// at the failing hook and exits non-zero.
conformance!(
    poststop_fail,
    runc_differs = "runc 1.1.5 stops at the first failing poststop hook; the spec says warn and run the rest",
    |rt: &Runtime| {
        let mut b = Bundle::new();
        let f = b.host_path("/bin/false").to_string_lossy().into_owned();
        b.add_hook("poststop", &f, &["false"], None);
        let script = format!("echo 'post-stop called' >> {}", b.host_path("/output").display());
        b.add_sh_hook("poststop", &script);
        b.args(&["true"]);
        let c = rt.create_container(&b);
        c.start().assert_ok("start");
        c.wait_stopped();
        let out = c.delete();
        assert_eq!(
            read(&b.host_path("/output")),
            "post-stop called\n",
            "the next poststop hook did not run\n{out}"
        );
        out.assert_ok("delete with a failing poststop hook");
        assert!(
            !out.stderr.trim().is_empty(),
            "no warning logged for the failed poststop hook"
        );
        drop(c);
        assert_nothing_left(rt, &b, "after delete with a failing poststop hook");
    }
);
