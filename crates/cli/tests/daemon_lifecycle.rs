//! The instance verbs end to end: `vessel` → a real vesseld → supervisors → containers.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use support::{Daemon, IMAGE};

#[test]
fn foreground_run_passes_output_and_exit_code_and_rm_leaves_nothing() {
    let d = Daemon::start("fg");
    let out = d.vessel(&["run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // --rm: gone once it exited.
    d.until(10, "the --rm instance to go", || {
        d.ok(&["ps", "-a", "-q"]).is_empty()
    });
    let left = d.leftovers();
    assert!(left.is_empty(), "{left:#?}");
    // stdin reaches an -i instance.
    let mut child = d
        .cmd(&["run", "-i", "--rm", IMAGE, "sh", "-c", "read x; echo got:$x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"typed\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got:typed\n");
    // Killed by a signal (from outside: PID 1 of a namespace ignores its own SIGKILL): 128 + N.
    let fg = d
        .cmd(&["run", "--name", "victim", IMAGE, "sleep", "30"])
        .spawn()
        .unwrap();
    d.until(10, "victim to run", || {
        d.api("GET", "/1.0/instances/victim", "")
            .1
            .contains("\"running\"")
    });
    d.ok(&["kill", "victim"]);
    let out = fg.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137));
}

#[test]
fn detached_instance_logs_exec_top_stop_rm() {
    let d = Daemon::start("detached");
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "app=web",
        IMAGE,
        "sh",
        "-c",
        "echo started; trap 'echo bye; exit 5' TERM; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(d.status("web"), "running");
    // Names and unique id prefixes both name it.
    assert_eq!(d.inspect(&id[..6])["name"], "web");
    d.until(10, "the first log line", || {
        d.ok(&["logs", "web"]).contains("started")
    });
    let ts = d.ok(&["logs", "-t", "web"]);
    assert!(ts.starts_with("20") && ts.contains("Z started"), "{ts}");
    let out = d.vessel(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/tmp",
        "web",
        "sh",
        "-c",
        "echo $X $(pwd); exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 /tmp\n");
    let top = d.ok(&["top", "web"]);
    assert!(top.contains("PID") && top.contains("sleep"), "{top}");
    assert!(d
        .ok(&["ps", "--filter", "label=app=web", "-q"])
        .contains(&id[..12]));
    assert!(d.ok(&["ps", "--filter", "label=app=db", "-q"]).is_empty());
    let stats = d.ok(&["--format", "json", "stats", "--no-stream", "web"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(stats[0]["memory_usage"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats[0]["pids"].as_u64().unwrap() >= 1, "{stats}");
    // stop: the trap runs, its exit code is recorded.
    d.ok(&["stop", "-t", "5", "web"]);
    let st = d.inspect("web");
    assert_eq!(st["state"]["status"], "exited");
    assert_eq!(st["state"]["exit_code"], 5);
    assert!(d.ok(&["logs", "--tail", "1", "web"]).contains("bye"));
    assert_eq!(d.ok(&["wait", "web"]).trim(), "5");
    // Started again: same instance, its files kept.
    d.ok(&["start", "web"]);
    assert_eq!(d.status("web"), "running");
    d.ok(&["rm", "-f", "web"]);
    d.assert_clean_after_rm_all();
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    let d = Daemon::start("escalate");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ]);
    let t = std::time::Instant::now();
    d.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(t.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(d.inspect("stubborn")["state"]["exit_code"], 137);
    d.assert_clean_after_rm_all();
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let d = Daemon::start("pause");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "p",
        IMAGE,
        "sh",
        "-c",
        "while true; do date +%s%N > /tmp/t; sleep 0.05; done",
    ]);
    d.ok(&["pause", "p"]);
    assert_eq!(d.status("p"), "paused");
    let freezer = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/freezer/{}/{}/freezer.state",
        d.name,
        d.inspect("p")["id"].as_str().unwrap()
    ))
    .unwrap();
    assert_eq!(freezer.trim(), "FROZEN");
    // A second pause is refused with the reason.
    assert!(d.fails(&["pause", "p"]).contains("must be running"));
    d.ok(&["unpause", "p"]);
    assert_eq!(d.status("p"), "running");
    d.ok(&["exec", "p", "true"]);
    d.assert_clean_after_rm_all();
}

#[test]
fn create_start_attach_rename_and_formats() {
    let d = Daemon::start("create");
    let id = d.ok(&[
        "create",
        "--name",
        "c1",
        IMAGE,
        "sh",
        "-c",
        "echo from-c1; exit 2",
    ]);
    assert_eq!(d.status("c1"), "created");
    let out = d.vessel(&["start", "-a", "c1"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-c1\n");
    d.ok(&["rename", "c1", "c2"]);
    assert_eq!(d.inspect(id.trim())["name"], "c2");
    let line = d.ok(&["ps", "-a", "--format", "{{.Name}}|{{.State}}|{{.ExitCode}}"]);
    assert_eq!(line, "c2|exited|2\n");
    let table = d.ok(&["ps", "-a", "--format", "table {{.Name}}\t{{.State}}"]);
    assert_eq!(table, "NAME\tSTATE\nc2\texited\n");
    let j = d.ok(&["ps", "-a", "--format", "{{json .Labels}}"]);
    assert_eq!(j, "{}\n");
    assert_eq!(
        d.ok(&["inspect", "--format", "{{.config.command}}", "c2"]).trim(),
        "[\"sh\",\"-c\",\"echo from-c1; exit 2\"]"
    );
    let all: serde_json::Value = serde_json::from_str(&d.ok(&["--format", "json", "ps", "-a"])).unwrap();
    assert_eq!(all[0]["Name"], "c2");
    d.assert_clean_after_rm_all();
}

#[test]
fn events_stream_the_lifecycle() {
    let d = Daemon::start("events");
    let mut ev = d
        .cmd(&["--format", "json", "events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = ev.stdout.take().unwrap();
    // Let the events connection be established before anything happens.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        d.vessel(&["run", "--name", "e1", IMAGE, "sh", "-c", "exit 6"])
            .status
            .code(),
        Some(6)
    );
    d.ok(&["rm", "e1"]);
    let mut actions = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_eq!(v["name"], "e1");
        if v["action"] == "died" {
            assert_eq!(v["exit_code"], 6);
        }
        actions.push(v["action"].as_str().unwrap().to_string());
        if v["action"] == "deleted" {
            break;
        }
    }
    let _ = ev.kill();
    let _ = ev.wait();
    assert_eq!(actions, ["created", "started", "died", "deleted"]);
}

#[test]
fn metrics_show_instances_and_requests() {
    let d = Daemon::start("metrics");
    d.ok(&[
        "run", "-d", "--name", "m1", "--memory", "64m", IMAGE, "sleep", "30",
    ]);
    let (status, text) = d.api("GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(text.contains("vessel_instance_up{"), "{text}");
    assert!(text.contains("name=\"m1\""), "{text}");
    let limit = text
        .lines()
        .find(|l| l.starts_with("vessel_instance_memory_limit_bytes{") && l.contains("m1"))
        .unwrap_or_else(|| panic!("no memory limit series: {text}"));
    assert!(limit.ends_with(" 67108864"), "{limit}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("vessel_instance_pids{") && l.contains("m1")),
        "{text}"
    );
    assert!(
        text.contains("vesseld_requests_total{method=\"POST\",route=\"/1.0/instances\",status=\"201\"} 1"),
        "{text}"
    );
    d.assert_clean_after_rm_all();
}

/// `vessel ARGS` on a terminal of `rows` x `cols` (`script` gives it a real one, as a person at a shell
/// has), "typed" entered after 1.5 s: its exit status and what the terminal showed.
fn on_a_terminal(d: &Daemon, rows: u16, cols: u16, args: &str) -> (std::process::ExitStatus, String) {
    let cmd = format!(
        "stty cols {cols} rows {rows}; {} --root {} --host unix://{} {args}",
        env!("CARGO_BIN_EXE_vessel"),
        d.root.display(),
        d.socket().display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (bsdutils) runs");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"typed\n").unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn terminal_sessions_get_a_pty_with_the_clients_size() {
    let d = Daemon::start("tty");
    let (status, text) = on_a_terminal(
        &d,
        33,
        91,
        &format!("run -it --rm {IMAGE} sh -c 'tty; stty size; read line; echo got:$line'"),
    );

    assert!(status.success(), "{text}");
    assert!(text.contains("/dev/pts/"), "no terminal in the instance: {text}");
    assert!(
        text.contains("33 91"),
        "the terminal size did not reach the instance: {text}"
    );
    assert!(
        text.contains("got:typed"),
        "input did not reach the instance: {text}"
    );
}

#[test]
fn exec_with_a_terminal_gets_a_pty_the_size_input_and_exit_code() {
    let d = Daemon::start("exectty");
    d.ok(&["run", "-d", "--name", "box", IMAGE, "sleep", "300"]);
    let (status, text) = on_a_terminal(
        &d,
        22,
        77,
        "exec -it box sh -c 'tty; stty size; read line; echo got:$line; exit 7'",
    );
    assert_eq!(status.code(), Some(7), "the exit code passes through: {text}");
    assert!(text.contains("/dev/pts/"), "no terminal for the exec: {text}");
    assert!(
        text.contains("22 77"),
        "the terminal size did not reach the exec: {text}"
    );
    assert!(text.contains("got:typed"), "input did not reach the exec: {text}");
    d.assert_clean_after_rm_all();
}
