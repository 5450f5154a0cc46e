//! The runtime under test and the commands it is driven with.

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bundle::Bundle;
use crate::tempdir::{anon_file, TempDir};

/// Default bound on one runtime invocation (override with VESSEL_CMD_TIMEOUT_SECS).
pub fn cmd_timeout() -> Duration {
    let secs = std::env::var("VESSEL_CMD_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Which implementation is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vessel,
    Runc,
}

/// A runtime binary with a private `--root` state directory (one per test, so tests run in parallel).
pub struct Runtime {
    kind: Kind,
    bin: PathBuf,
    area: String,
    root: TempDir,
    wrapper: RefCell<Vec<String>>,
}

/// Panics unless the tests run as root: they create containers, cgroups and mounts.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "the conformance tests must run as root (they create containers, cgroups and mounts); \
             run them as root, e.g. `sudo -E cargo test -p vessel-conformance`"
        );
    }
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace dir")
        .to_path_buf()
}

/// Finds the vessel-runtime binary: $VESSEL_RUNTIME, else the newest of target/{debug,release}.
pub fn vessel_binary() -> PathBuf {
    if let Ok(p) = std::env::var("VESSEL_RUNTIME") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            panic!("VESSEL_RUNTIME={} does not exist or is not a file", p.display());
        }
        return p;
    }
    let ws = workspace_dir();
    let target = match std::env::var("CARGO_TARGET_DIR") {
        Ok(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Ok(t) => ws.join(t),
        Err(_) => ws.join("target"),
    };
    let newest = ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("vessel-runtime"))
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?.modified().ok()?;
            Some((m, p))
        })
        .max();
    match newest {
        Some((_, p)) => p,
        None => panic!(
            "vessel-runtime not found in {}/{{debug,release}}: build it first with \
             `cargo build -p vessel-runtime`, or set VESSEL_RUNTIME=/path/to/vessel-runtime",
            target.display()
        ),
    }
}

/// Finds runc: /usr/sbin/runc or the first `runc` on PATH.
pub fn runc_binary() -> PathBuf {
    let default = PathBuf::from("/usr/sbin/runc");
    if default.is_file() {
        return default;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("runc");
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("runc not found (/usr/sbin/runc or PATH): install it with scripts/test-deps.sh");
}

impl Runtime {
    /// vessel-runtime, see [`vessel_binary`].
    pub fn vessel() -> Runtime {
        require_root();
        Self::with(Kind::Vessel, vessel_binary())
    }

    /// runc, see [`runc_binary`].
    pub fn runc() -> Runtime {
        require_root();
        Self::with(Kind::Runc, runc_binary())
    }

    fn with(kind: Kind, bin: PathBuf) -> Runtime {
        let name = match kind {
            Kind::Vessel => "vessel",
            Kind::Runc => "runc",
        };
        Runtime {
            kind,
            bin,
            area: "test".into(),
            root: TempDir::new(&format!("{name}-root")),
            wrapper: RefCell::new(Vec::new()),
        }
    }

    /// Names the test area (used in container ids).
    pub fn with_area(mut self, area: &str) -> Runtime {
        self.area = area.replace('_', "-");
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn is_vessel(&self) -> bool {
        self.kind == Kind::Vessel
    }

    pub fn is_runc(&self) -> bool {
        self.kind == Kind::Runc
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Vessel => "vessel",
            Kind::Runc => "runc",
        }
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The private `--root` state directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Runs every later invocation through this command prefix (e.g. `nsenter -t PID -m --`).
    pub fn set_wrapper(&self, prefix: &[&str]) {
        *self.wrapper.borrow_mut() = prefix.iter().map(|s| s.to_string()).collect();
    }

    /// A fresh, unique container id: `t-<area>-<runtime>-<pid>-<n>`.
    pub fn new_id(&self) -> String {
        format!(
            "t-{}-{}-{}-{}",
            self.area,
            self.name(),
            std::process::id(),
            crate::next_counter()
        )
    }

    /// `[wrapper...] BIN --root ROOT GLOBAL... ARGS...`
    pub fn command(&self, global: &[&str], args: &[&str]) -> Command {
        let wrapper = self.wrapper.borrow();
        let mut cmd = if let Some((first, rest)) = wrapper.split_first() {
            let mut c = Command::new(first);
            c.args(rest).arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        cmd.arg("--root").arg(self.root()).args(global).args(args);
        cmd
    }

    /// Runs the runtime with `args`, bounded by [`cmd_timeout`].
    pub fn exec(&self, args: &[&str]) -> Out {
        self.exec_with(&[], args, cmd_timeout())
    }

    /// Runs the runtime with global options (before the subcommand) and a timeout.
    pub fn exec_with(&self, global: &[&str], args: &[&str], timeout: Duration) -> Out {
        run_bounded(self.command(global, args), timeout).0
    }

    /// `run --bundle B ID` in the foreground: writes the config first; on timeout the container is
    /// force-deleted.
    pub fn run(&self, b: &Bundle, id: &str) -> Out {
        b.write_config();
        let bundle = b.path().to_string_lossy().into_owned();
        let out = self.exec(&["run", "--bundle", &bundle, id]);
        if out.timed_out {
            self.delete_force(id);
        }
        out
    }

    /// Runs a fresh container in the foreground and returns its output (asserting success).
    pub fn run_ok(&self, b: &Bundle) -> Out {
        let id = self.new_id();
        let _g = self.guard(&id);
        let out = self.run(b, &id);
        out.assert_ok(&format!("{} run of the container", self.name()));
        out
    }

    /// `create --bundle B [EXTRA...] ID`; writes the config first.
    pub fn create(&self, b: &Bundle, id: &str) -> Out {
        self.create_with(b, id, &[])
    }

    pub fn create_with(&self, b: &Bundle, id: &str, extra: &[&str]) -> Out {
        b.write_config();
        self.create_no_write(b.path(), id, extra, &[]).0
    }

    fn create_no_write(&self, bundle: &Path, id: &str, extra: &[&str], global: &[&str]) -> (Out, File) {
        let bundle = bundle.to_string_lossy().into_owned();
        let mut args = vec!["create", "--bundle", &bundle];
        args.extend_from_slice(extra);
        args.push(id);
        run_bounded(self.command(global, &args), cmd_timeout())
    }

    /// Creates a container with a fresh id, asserting success; the returned guard force-deletes it.
    pub fn create_container(&self, b: &Bundle) -> Container<'_> {
        b.write_config();
        let id = self.new_id();
        let mut c = self.guard(&id);
        let (out, stdout) = self.create_no_write(b.path(), &id, &[], &[]);
        out.assert_ok(&format!("{} create", self.name()));
        c.stdout = Some(stdout);
        c
    }

    pub fn start(&self, id: &str) -> Out {
        self.exec(&["start", id])
    }

    /// `state ID` as raw output.
    pub fn state_out(&self, id: &str) -> Out {
        self.exec(&["state", id])
    }

    /// `state ID` parsed; panics if the command fails or prints no JSON.
    pub fn state(&self, id: &str) -> Value {
        let out = self.state_out(id);
        out.assert_ok(&format!("state {id}"));
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state {id} printed no valid JSON ({e}):\n{out}"))
    }

    /// The `status` field, or None if `state` fails.
    pub fn status(&self, id: &str) -> Option<String> {
        let out = self.state_out(id);
        if !out.success() {
            return None;
        }
        serde_json::from_str::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["status"].as_str().map(String::from))
    }

    /// Polls `state` until the status is one of `wanted`; panics on timeout or if `state` fails.
    pub fn wait_status(&self, id: &str, wanted: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(5);
        loop {
            let st = self.state(id);
            if wanted.iter().any(|w| st["status"] == *w) {
                return st;
            }
            if Instant::now() > deadline {
                panic!("container {id} did not reach {wanted:?} within {timeout:?}; last state: {st}");
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Waits (10 s at most) for the container to be `stopped`.
    pub fn wait_stopped(&self, id: &str) -> Value {
        self.wait_status(id, &["stopped"], Duration::from_secs(10))
    }

    pub fn kill(&self, id: &str, signal: &str) -> Out {
        self.exec(&["kill", id, signal])
    }

    pub fn delete(&self, id: &str) -> Out {
        self.exec(&["delete", id])
    }

    pub fn delete_force(&self, id: &str) -> Out {
        self.exec(&["delete", "--force", id])
    }

    /// A guard that force-deletes container `id` when dropped.
    pub fn guard(&self, id: &str) -> Container<'_> {
        Container {
            rt: self,
            id: id.to_string(),
            stdout: None,
        }
    }

    /// The container state directories present under `--root`.
    pub fn state_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.root())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A container that is force-deleted when the guard drops, so a failing test leaks nothing.
pub struct Container<'a> {
    rt: &'a Runtime,
    pub id: String,
    stdout: Option<File>,
}

impl Container<'_> {
    pub fn start(&self) -> Out {
        self.rt.start(&self.id)
    }
    pub fn state(&self) -> Value {
        self.rt.state(&self.id)
    }
    pub fn status(&self) -> Option<String> {
        self.rt.status(&self.id)
    }
    /// The `pid` in `state`, as a string (for /proc paths).
    pub fn pid(&self) -> String {
        let st = self.state();
        let pid = st["pid"].as_i64().unwrap_or(0);
        assert!(pid > 0, "state of {} has no pid: {st}", self.id);
        pid.to_string()
    }
    pub fn kill(&self, signal: &str) -> Out {
        self.rt.kill(&self.id, signal)
    }
    pub fn delete(&self) -> Out {
        self.rt.delete(&self.id)
    }
    pub fn wait_status(&self, wanted: &[&str], timeout: Duration) -> Value {
        self.rt.wait_status(&self.id, wanted, timeout)
    }
    pub fn wait_stopped(&self) -> Value {
        self.rt.wait_stopped(&self.id)
    }
    /// What the container process wrote to stdout so far (it inherits `create`'s stdout).
    pub fn output(&self) -> String {
        self.stdout.as_ref().map(read_all).unwrap_or_default()
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .rt
            .exec_with(&[], &["delete", "--force", &self.id], Duration::from_secs(20));
    }
}

/// The result of one command.
#[derive(Debug, Clone)]
pub struct Out {
    pub cmd: String,
    /// Exit code, None if killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// Panics with the whole output unless the command succeeded.
    pub fn assert_ok(&self, what: &str) -> &Self {
        assert!(self.success(), "{what}: expected success\n{self}");
        self
    }

    /// Panics unless the command exited non-zero (not by timeout or signal).
    pub fn assert_fail(&self, what: &str) -> &Self {
        assert!(
            !self.timed_out && self.code.is_some_and(|c| c != 0),
            "{what}: expected a non-zero exit\n{self}"
        );
        self
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    /// stdout lines, trimmed.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().map(|l| l.trim()).collect()
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command: {}", self.cmd)?;
        match (self.code, self.signal, self.timed_out) {
            (_, _, true) => writeln!(f, "  result: TIMED OUT (killed)")?,
            (Some(c), _, _) => writeln!(f, "  exit code: {c}")?,
            (None, s, _) => writeln!(f, "  killed by signal {s:?}")?,
        }
        writeln!(f, "  stdout: {}", indent(&self.stdout))?;
        write!(f, "  stderr: {}", indent(&self.stderr))
    }
}

fn indent(s: &str) -> String {
    if s.is_empty() {
        return "<empty>".into();
    }
    s.trim_end().replace('\n', "\n          ")
}

fn read_all(f: &File) -> String {
    let mut f = f;
    let mut s = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

/// Runs `cmd` with stdin from /dev/null and stdout/stderr to anonymous files, killing it after
/// `timeout`. Returns the result and the stdout file (which a container may keep writing to).
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> (Out, File) {
    let out_f = anon_file().expect("anonymous stdout file");
    let err_f = anon_file().expect("anonymous stderr file");
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(out_f.try_clone().expect("dup"))
        .stderr(err_f.try_clone().expect("dup"));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
    drop(cmd);
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(st) => break st,
            None if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            None => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(20));
            }
        }
    };
    let out = Out {
        cmd: desc,
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout: read_all(&out_f),
        stderr: read_all(&err_f),
    };
    (out, out_f)
}
