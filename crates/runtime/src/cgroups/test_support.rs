//! Helpers for the tests that run as root against the host's real cgroups: a uniquely named cgroup and child
//! processes that are cleaned up by Drop, even when an assertion fails.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Cgroup;

/// Fails the calling test, with the reason, unless it runs as root.
pub(crate) fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root for {what}; run `cargo test -p vessel-runtime --lib cgroups` as root"
    );
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A cgroup at `/vessel-test-<pid>-<n>` in every hierarchy, created on construction; on drop its processes are
/// thawed and killed and its directories removed.
pub(crate) struct TestCgroup {
    pub cg: Cgroup,
}

impl TestCgroup {
    pub(crate) fn new() -> TestCgroup {
        require_root("creating cgroups");
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = format!("/vessel-test-{}-{n}", std::process::id());
        let cg = Cgroup::resolve(Some(Path::new(&path)), "unused", false).expect("resolve the test cgroup");
        // Construct the guard first so that a half-done create is cleaned up too.
        let guard = TestCgroup { cg };
        guard
            .cg
            .create()
            .unwrap_or_else(|e| panic!("create {}: {e}", guard.cg.describe()));
        guard
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.cg.thaw();
        if let Some(u) = self.cg.unified_dir() {
            // Tests may freeze through cgroup2 directly, even where the v1 freezer is the main one.
            let _ = super::fs::write(u, "cgroup.freeze", 0);
        }
        for _ in 0..50 {
            let pids = self.cg.pids().unwrap_or_default();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Err(e) = self.cg.destroy() {
            // Never panic in drop (it may run during a panic); say what is left behind.
            eprintln!("cleanup of {} failed: {e}", self.cg.describe());
        }
    }
}

/// A `sh` child that waits for a line on stdin before running `script`, so it can be moved into a cgroup first.
/// Killed and reaped on drop.
pub(crate) struct Gated {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Gated {
    pub(crate) fn spawn(script: &str) -> Gated {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Gated { child, stdin, stdout }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Lets the script run.
    pub(crate) fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("go is called once");
        stdin.write_all(b"go\n").expect("write to the child");
        stdin.flush().expect("flush");
    }

    /// The next line the script prints.
    pub(crate) fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("read from the child");
        s.trim().to_string()
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
