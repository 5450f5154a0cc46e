//! A real vesseld per test, on a private root, run directory and name (so its cgroups are its own), with
//! the bundled busybox image imported; the `vessel` CLI and raw HTTP to talk to it; checks that nothing it
//! made is left on the host.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const IMAGE: &str = "t/busybox";

pub struct Daemon {
    /// vesseld's own network namespace: its bridges, nftables table and sysctls never touch the host's.
    pub netns: Option<vessel_net::netns::NetNs>,
    pub base: PathBuf,
    pub root: PathBuf,
    pub run: PathBuf,
    pub name: String,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
}

fn bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_vessel")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// The static vessel-agent (scripts/build-agent), if it was built.
pub fn static_agent() -> Option<std::ffi::OsString> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-unknown-linux-gnu/debug/vessel-agent");
    p.exists().then(|| p.into_os_string())
}

/// The busybox root filesystem, made once per test binary.
fn rootfs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vessel-test-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
        let out = Command::new(script).arg(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "busybox-rootfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Gone when the test binary exits (a static has no drop).
        extern "C" fn remove_rootfs() {
            if let Some(d) = DIR.get() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        // SAFETY: atexit registers a function with no arguments that only removes a directory.
        unsafe { libc::atexit(remove_rootfs) };
        dir
    })
}

impl Daemon {
    /// A daemon named `vt-TAG-PID`, started, with the image imported.
    pub fn start(tag: &str) -> Daemon {
        Daemon::start_with(tag, &[])
    }

    pub fn start_with(tag: &str, extra: &[&str]) -> Daemon {
        Daemon::start_in(tag, extra, true)
    }

    /// vesseld in the host's network namespace, for tests whose peers listen on the host's loopback (a
    /// registry, a TLS client); their instances must use `--network none`, so the host keeps its links and
    /// firewall as they are.
    pub fn start_on_host_network(tag: &str, extra: &[&str]) -> Daemon {
        Daemon::start_in(tag, extra, false)
    }

    fn start_in(tag: &str, extra: &[&str], own_netns: bool) -> Daemon {
        let name = format!("vt-{tag}-{}", std::process::id());
        let base = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let netns = own_netns.then(|| {
            vessel_net::netns::NetNs::create(&base.join("host.netns"))
                .expect("a network namespace for vesseld (run the tests as root)")
        });
        let mut d = Daemon {
            netns,
            root: base.join("root"),
            run: base.join("run"),
            base,
            name,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        let out = d.vessel(&[
            "image",
            "import",
            "--change",
            "CMD [\"sh\"]",
            &rootfs().display().to_string(),
            IMAGE,
        ]);
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Layers unpacked now: the first create of every test would do it otherwise (and a test that kills
        // vesseld mid-create would keep interrupting that unpack instead of vesseld's own work).
        let out = d.vessel(&["image", "unpack", IMAGE]);
        assert!(
            out.status.success(),
            "unpack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        d.spawn();
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.run.join("vessel.sock")
    }

    /// Start vesseld and wait until it answers.
    pub fn spawn(&mut self) {
        let _ = std::fs::create_dir_all(&self.base);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("vesseld.log"))
            .unwrap();
        let mut command = Command::new(bin("vesseld"));
        if let Some(ns) = &self.netns {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = std::os::fd::AsFd::as_fd(ns).as_raw_fd();
            // SAFETY: between fork and exec only setns(2), a single async-signal-safe syscall, runs; the fd
            // stays open in the parent for the call.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .arg("--root")
            .arg(&self.root)
            .arg("--run-dir")
            .arg(&self.run)
            .arg("--name")
            .arg(&self.name)
            .args(&self.extra_args)
            // The static guest agent scripts/build-agent makes, for VMs made from images.
            .args(
                static_agent()
                    .map(|a| vec!["--agent".into(), a])
                    .unwrap_or_default(),
            )
            // VESSEL_TEST_USERNS=host runs every test's instances on the host's ids (auto is vesseld's default).
            .args(match std::env::var("VESSEL_TEST_USERNS").as_deref() {
                Ok("host") => &["--userns-default", "host"][..],
                Ok("auto") => &["--userns-default", "auto"][..],
                _ => &[][..],
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.api("GET", "/1.0", "").0 == 200 {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("vesseld exited with {status} at start: {}", self.daemon_log());
            }
            assert!(
                Instant::now() < deadline,
                "vesseld did not answer: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `f` on a thread in vesseld's network namespace (the "host" its instances see).
    pub fn on_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.netns.as_ref().expect("vesseld's namespace");
        ns.enter(|| Ok(f())).expect("enter vesseld's namespace")
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.base.join("vesseld.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as a service manager stops it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vessel"));
        c.arg("--root")
            .arg(&self.root)
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args);
        c
    }

    pub fn vessel(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs `vessel ARGS`, asserts it succeeded, returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vessel(args);
        assert!(
            out.status.success(),
            "vessel {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `vessel ARGS`, asserts it failed with one line on stderr, returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.vessel(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "vessel {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(err.lines().count(), 1, "vessel {args:?}: not one line: {err}");
        err
    }

    /// One HTTP request on the API socket: (status, body). Status 0 when the daemon does not answer.
    pub fn api(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        api(&self.socket(), method, path, body)
    }

    pub fn json(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let (status, text) = self.api(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        self.json("GET", &format!("/1.0/instances/{name}"), "")
    }

    pub fn inspect_network(&self, name: &str) -> serde_json::Value {
        self.json("GET", &format!("/1.0/networks/{name}"), "")
    }

    pub fn status(&self, name: &str) -> String {
        self.inspect(name)["state"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Until `f` holds (checked every 50 ms), or panic with `what` after `secs`.
    pub fn until(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; vesseld log: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What this daemon made that is still on the host: mounts under its root, cgroups under its parent,
    /// processes naming its run directory, runtime state, instance directories, supervisor sockets.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let root = self.root.display().to_string();
        for line in std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
        {
            if line.contains(&root) {
                left.push(format!("mount: {line}"));
            }
        }
        for ctl in ["memory", "pids", "cpu", "freezer", "blkio", "devices", "cpuset"] {
            let dir = Path::new("/sys/fs/cgroup").join(ctl).join(&self.name);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    left.push(format!("cgroup: {}", e.path().display()));
                }
            }
        }
        let run = self.run.display().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(&run) && !text.contains("vesseld") {
                left.push(format!("process {}: {text}", e.file_name().to_string_lossy()));
            }
        }
        let list_links = || {
            let mut nl = vessel_net::netlink::Netlink::open().expect("netlink");
            vessel_net::link::names(&mut nl).unwrap_or_default()
        };
        let links = match &self.netns {
            Some(_) => self.on_host(list_links),
            None => list_links(),
        };
        // Instances' host ends are v + 8 id digits + 6 network id digits.
        for l in links
            .iter()
            .filter(|l| l.len() == 15 && l.starts_with('v') && !l.starts_with("vessel"))
        {
            left.push(format!("link: {l}"));
        }
        for (what, dir) in [
            ("network namespace", self.run.join("netns")),
            ("runtime state", self.run.join("runtime")),
            ("instance dir", self.root.join("instances")),
            ("supervisor socket", self.run.join("sup")),
        ] {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                left.push(format!("{what}: {}", e.path().display()));
            }
        }
        left
    }

    /// Remove every instance, then assert nothing is left.
    pub fn assert_clean_after_rm_all(&self) {
        let ids = self.ok(&["ps", "-a", "-q"]);
        for id in ids.lines() {
            let out = self.vessel(&["rm", "-f", id]);
            let err = String::from_utf8_lossy(&out.stderr);
            // An --rm instance can finish removing itself between the list and this.
            assert!(
                out.status.success() || err.contains("No such instance"),
                "rm -f {id}: {err}"
            );
        }
        let left = self.leftovers();
        assert!(left.is_empty(), "left on the host: {left:#?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Ok(out) = self.cmd(&["ps", "-a", "-q"]).output() {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = self.cmd(&["rm", "-f", id]).output();
                }
            }
        }
        self.stop();
        self.netns = None;
        // vesseld's namespace and any a test made beside it (an "outside host"): their bind mounts go.
        for e in std::fs::read_dir(&self.base).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "netns") {
                let _ = vessel_net::netns::remove(&e.path());
            }
        }
        for ctl in [
            "memory",
            "pids",
            "cpu",
            "cpuacct",
            "freezer",
            "blkio",
            "devices",
            "cpuset",
            "net_cls",
            "perf_event",
            "hugetlb",
            "net_prio",
            "rdma",
            "misc",
            "unified",
            "systemd",
        ] {
            let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(ctl).join(&self.name));
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

/// One HTTP request on a vesseld socket: (status, body). Status 0 when nothing answers.
pub fn api(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: vesseld\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, dechunk(&body, &text))
}

/// A body sent with `Transfer-Encoding: chunked`, joined.
fn dechunk(body: &str, whole: &str) -> String {
    let head = whole.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase();
    if !head.contains("transfer-encoding: chunked") {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
