//! vessel-agent's process handling, run as a normal process on this host (`--listen unix:PATH`) and driven
//! by the host's client: output and exit status, a terminal with its size, stdin, signals, stats, concurrent
//! sessions, and hosts that misbehave.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use vessel_agent::client::{AgentClient, ClientError};
use vessel_agent::proto::{self, Process, Reply, Request};
use vessel_api::frames::{self, FrameKind};

struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Agent {
    fn start(name: &str) -> Agent {
        let dir = std::env::temp_dir().join(format!("vessel-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vessel-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", dir.join("agent.sock").display()))
            .spawn()
            .unwrap();
        let a = Agent { child, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while UnixStream::connect(a.socket()).is_err() {
            assert!(Instant::now() < deadline, "the agent did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        a
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    fn client(&self) -> AgentClient {
        let mut c = AgentClient::connect_unix(&self.socket()).unwrap();
        assert!(c.hello().unwrap().starts_with("vessel-agent "));
        c
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(script: &str) -> Process {
    Process {
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/usr/bin:/bin".into(), "GREETING=hi".into()],
        cwd: "/".into(),
        ..Default::default()
    }
}

#[test]
fn a_process_gets_its_environment_and_its_output_and_status_come_back() {
    let a = Agent::start("run");
    let mut c = a.client();
    let mut p = sh("echo \"$GREETING from $(pwd)\"; echo oops >&2; exit 3");
    p.cwd = "/tmp".into();
    let pid = c.run(p, true, None).unwrap();
    assert!(pid > 0);
    let (out, err, code) = c.collect().unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "hi from /tmp\n");
    assert_eq!(String::from_utf8_lossy(&err), "oops\n");
    assert_eq!(code, 3);

    // A program that cannot run is refused with the reason, and the agent serves the next session.
    let mut c = a.client();
    let mut p = sh("true");
    p.args = vec!["/nonexistent/program".into()];
    match c.run(p, false, None) {
        Err(ClientError::Refused(m)) => assert!(m.contains("/nonexistent/program"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut c = a.client();
    c.run(sh("exit 0"), false, None).unwrap();
    assert_eq!(c.collect().unwrap().2, 0);
}

#[test]
fn stdin_signals_and_stats_reach_the_process() {
    let a = Agent::start("io");
    let mut c = a.client();
    c.run(sh("cat; echo done"), false, None).unwrap();
    c.send(&frames::encode(FrameKind::Stdin, b"line one\n")).unwrap();
    c.send(&frames::encode(FrameKind::StdinEof, b"")).unwrap();
    let (out, _, code) = c.collect().unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "line one\ndone\n");
    assert_eq!(code, 0);

    let mut c = a.client();
    c.run(sh("echo ready; exec sleep 100"), false, None).unwrap();
    assert_eq!(c.next_frame().unwrap(), (FrameKind::Stdout, b"ready\n".to_vec()));
    c.send(&proto::control(&Request::Stats)).unwrap();
    match c.next_frame().unwrap() {
        (FrameKind::Control, p) => match proto::parse_reply(&p).unwrap() {
            Reply::Stats(s) => assert!(s.memory_total > 0 && s.processes > 0, "{s:?}"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    c.send(&proto::control(&Request::Signal {
        signal: libc::SIGTERM,
    }))
    .unwrap();
    assert_eq!(c.collect().unwrap().2, 128 + libc::SIGTERM);
}

#[test]
fn a_terminal_has_the_size_asked_for_and_follows_resizes() {
    let a = Agent::start("tty");
    let mut c = a.client();
    let mut p = sh("stty size; read line; stty size; test -t 0 && echo tty");
    p.tty = true;
    p.rows = 30;
    p.cols = 100;
    c.run(p, false, None).unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("30 100") {
        match c.next_frame().unwrap() {
            (FrameKind::Stdout, d) => seen.extend(d),
            other => panic!("{other:?}"),
        }
    }
    c.send(&frames::encode_resize(40, 120)).unwrap();
    c.send(&frames::encode(FrameKind::Stdin, b"go\r")).unwrap();
    let (out, _, code) = c.collect().unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("40 120") && out.contains("tty"), "{out}");
    assert_eq!(code, 0);
}

#[test]
fn sessions_run_side_by_side() {
    let a = Agent::start("many");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let sock = a.socket();
            std::thread::spawn(move || {
                let mut c = AgentClient::connect_unix(&sock).unwrap();
                c.hello().unwrap();
                c.run(sh(&format!("sleep 0.2; echo {i}; exit {i}")), false, None)
                    .unwrap();
                c.collect().unwrap()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (out, _, code) = h.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&out), format!("{i}\n"));
        assert_eq!(code, i as i32);
    }
}

#[test]
fn a_misbehaving_host_loses_its_session_and_the_agent_goes_on() {
    let mut a = Agent::start("hostile");
    // Garbage, a frame over the limit, another protocol version, a host that hangs up mid-process.
    let mut s = UnixStream::connect(a.socket()).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut s = UnixStream::connect(a.socket()).unwrap();
    s.write_all(&[7, 0xff, 0xff, 0xff, 0xff]).unwrap();
    let _ = s.read_to_end(&mut buf);
    let mut c = AgentClient::connect_unix(&a.socket()).unwrap();
    c.send(&proto::control(&Request::Hello { version: 99 })).unwrap();
    match c.hello() {
        Err(ClientError::Refused(m)) | Err(ClientError::Proto(proto::ProtoError::Message(m))) => {
            assert!(m.contains("version"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let marker = a.dir.join("still-running");
    let mut c = a.client();
    c.run(sh(&format!("sleep 0.5; touch {}", marker.display())), false, None)
        .unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(800));
    assert!(!marker.exists(), "a process whose host hung up is killed");
    assert!(a.alive());
    let mut c = a.client();
    c.run(sh("echo fine"), false, None).unwrap();
    assert_eq!(c.collect().unwrap().0, b"fine\n");
}
