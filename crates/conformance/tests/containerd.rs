//! containerd 1.6 (`ctr`, the runc v2 shim) with vessel-runtime as the shim's runc binary.
//!
//! The tests share one private containerd daemon (see [`Containerd`]) with the busybox image imported
//! from an OCI archive built in Rust; `ctr run --runc-binary <wrapper> --runc-root <private>` makes the
//! shim run vessel-runtime, which the wrapper's log and vessel-runtime's own state prove.

use std::time::Duration;

use vessel_conformance::interop::{Containerd, PtySession};
use vessel_conformance::wait_until;

const T: Duration = Duration::from_secs(10);

/// The line of `ctr task list` for `id`: (pid, status).
fn task_line(ctrd: &Containerd, id: &str) -> Option<(String, String)> {
    let out = ctrd.ctr(&["task", "list"]);
    out.stdout.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 3 && f[0] == id).then(|| (f[1].to_string(), f[2].to_string()))
    })
}

#[test]
fn ctr_run_rm_prints_output_and_returns_exit_code() {
    let ctrd = Containerd::shared();
    let c = ctrd.container("hello");
    let out = ctrd.run(&["--rm"], &c.id, &["echo", "hello"]);
    out.assert_ok("ctr run --rm IMAGE ID echo hello");
    assert_eq!(out.stdout, "hello\n", "ctr run --rm output\n{out}");

    let c2 = ctrd.container("exit");
    let out = ctrd.run(&["--rm"], &c2.id, &["sh", "-c", "exit 3"]);
    assert_eq!(
        out.code,
        Some(3),
        "ctr run --rm returns the container's exit code\n{out}"
    );

    let root = ctrd.runtime_root().display().to_string();
    for id in [&c.id, &c2.id] {
        ctrd.wrapper()
            .assert_verbs_for(id, &["create", "start", "delete"]);
        let mine = ctrd.wrapper().invocations_for(id);
        assert!(
            mine.iter().all(|l| l.starts_with(&format!("--root {root} "))),
            "the shim did not pass --runc-root ({root}) to vessel-runtime:\n{}",
            mine.join("\n")
        );
        assert!(
            !ctrd.runtime_root().join(id).exists(),
            "vessel-runtime state of {id} was left in {root} after ctr run --rm"
        );
    }
}

#[test]
fn ctr_run_tty() {
    let ctrd = Containerd::shared();
    let c = ctrd.container("tty");
    let mut args: Vec<String> = ["run", "--rm", "--tty"].map(String::from).to_vec();
    args.extend(ctrd.runtime_flags());
    args.extend([vessel_conformance::interop::IMAGE.to_string(), c.id.clone()]);
    args.extend(["sh", "-c", "tty; read x; echo got-$x; exit 6"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = PtySession::spawn(ctrd.command(&args));
    s.expect("the container's tty name", Duration::from_secs(30), |t| {
        t.lines().any(|l| l.trim().starts_with("/dev/pts/"))
    });
    s.send("typed-input\r");
    s.expect("the typed input echoed back by the container", T, |t| {
        t.contains("got-typed-input")
    });
    let status = s
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("ctr run --tty did not exit; transcript:\n{}", s.transcript()));
    assert_eq!(
        status.code(),
        Some(6),
        "ctr run --tty exit status; transcript:\n{}",
        s.transcript()
    );
    ctrd.wrapper()
        .assert_verbs_for(&c.id, &["create", "start", "delete"]);
    let create = ctrd
        .wrapper()
        .invocations_for(&c.id)
        .into_iter()
        .find(|l| l.contains(" create "));
    assert!(
        create
            .as_deref()
            .is_some_and(|l| l.contains(" --console-socket ")),
        "the shim did not give vessel-runtime create a --console-socket: {create:?}"
    );
}

#[test]
fn ctr_detached_exec_kill_delete() {
    let ctrd = Containerd::shared();
    let c = ctrd.container("detached");
    let script = "trap 'exit 5' TERM; echo ready > /tmp/ready; while :; do sleep 0.1; done";
    ctrd.run(&["-d"], &c.id, &["sh", "-c", script])
        .assert_ok("ctr run -d");

    let (pid, status) = task_line(&ctrd, &c.id).expect("ctr task list shows the detached task");
    assert_eq!(status, "RUNNING", "ctr task list");
    // vessel-runtime, in the root the shim was given, holds the same container with the same pid.
    let root = ctrd.runtime_root();
    let st = ctrd
        .wrapper()
        .state_at(&root, &c.id)
        .unwrap_or_else(|| panic!("vessel-runtime --root {} state {} failed", root.display(), c.id));
    assert_eq!(st["status"], "running", "vessel-runtime state: {st}");
    assert_eq!(
        st["pid"].to_string(),
        pid,
        "vessel-runtime state pid vs ctr task list: {st}"
    );
    let list = ctrd.wrapper().vessel_at(&root, &["list"]);
    assert!(
        list.stdout.contains(&c.id),
        "vessel-runtime list does not show {}\n{list}",
        c.id
    );

    let fifo = ctrd.fifo_dir().display().to_string();
    let exec = |exec_id: &str| {
        ctrd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            exec_id,
            "--fifo-dir",
            &fifo,
            &c.id,
            "sh",
            "-c",
            "cat /tmp/ready; echo exec-ok",
        ])
    };
    let mut attempt = 0;
    assert!(
        wait_until(T, || {
            attempt += 1;
            exec(&format!("wait-ready-{attempt}")).stdout.starts_with("ready")
        }),
        "the container never wrote /tmp/ready (seen through ctr task exec)"
    );
    let out = exec("e1");
    out.assert_ok("ctr task exec");
    assert_eq!(out.stdout, "ready\nexec-ok\n", "ctr task exec output\n{out}");

    ctrd.ctr_ok(&["task", "kill", &c.id], "ctr task kill (SIGTERM)");
    assert!(
        wait_until(T, || task_line(&ctrd, &c.id).is_some_and(|(_, s)| s == "STOPPED")),
        "the task did not stop after SIGTERM: {:?}",
        task_line(&ctrd, &c.id)
    );
    let del = ctrd.ctr_ok(&["task", "delete", &c.id], "ctr task delete");
    assert!(
        del.stderr.contains("exit code 5"),
        "ctr task delete should report the TERM trap's exit code 5\n{del}"
    );
    assert!(
        task_line(&ctrd, &c.id).is_none(),
        "task still listed after ctr task delete"
    );
    ctrd.ctr_ok(&["container", "rm", &c.id], "ctr container rm");
    let ls = ctrd.ctr_ok(&["container", "list", "--quiet"], "ctr container list");
    assert!(
        !ls.stdout.split_whitespace().any(|i| i == c.id),
        "container still listed\n{ls}"
    );
    assert!(
        !root.join(&c.id).exists(),
        "vessel-runtime state of {} was left in {} after ctr task delete",
        c.id,
        root.display()
    );

    ctrd.wrapper()
        .assert_verbs_for(&c.id, &["create", "start", "exec", "kill", "delete"]);
    let kills: Vec<String> = ctrd
        .wrapper()
        .invocations_for(&c.id)
        .into_iter()
        .filter(|l| l.contains(" kill "))
        .collect();
    assert!(
        kills.iter().any(|l| l.ends_with(&format!(" {} 15", c.id))),
        "ctr task kill did not become vessel-runtime kill {} 15: {kills:?}",
        c.id
    );
}
