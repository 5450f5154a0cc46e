//! Filters loaded into the kernel, each in a forked child: the child loads the filter, makes syscalls,
//! and reports what it saw over a pipe; the parent asserts on the report and on how the child ended.
//! The child sets `no_new_privs` first, so none of this needs `CAP_SYS_ADMIN`.

use std::ffi::c_long;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde_json::{json, Value};

use super::tests::{receive_one, TempDir};
use super::*;

/// How the child ended: its exit code with what it reported, or the signal that killed it.
#[derive(Debug, PartialEq)]
enum Outcome {
    Exited(i32, String),
    Signaled(Signal),
}

const PASSED: Outcome = Outcome::Exited(0, String::new());

fn build(value: Value) -> Filter {
    let config = serde_json::from_value(value).expect("test profile parses");
    build_filter(&config).unwrap_or_else(|e| panic!("build_filter failed: {e}"))
}

/// Fork; in the child load `filter` and run `body`, whose `Err` text comes back to the parent.
fn in_child(filter: Filter, body: impl FnOnce(Option<OwnedFd>) -> Result<(), String>) -> Outcome {
    in_child_with(filter, body, |_| ())
}

/// [`in_child`], running `parent` (with the child's pid) while the child runs.
fn in_child_with(
    filter: Filter,
    body: impl FnOnce(Option<OwnedFd>) -> Result<(), String>,
    parent: impl FnOnce(Pid),
) -> Outcome {
    let (report_read, report_write) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the test harness has other threads; the child only runs the filter load and the test body
    // (plain syscalls and glibc malloc, which is fork-safe) and leaves with `_exit`, never returning.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(report_read);
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| child_main(filter, body)));
            let (code, message) = match result {
                Ok(Ok(())) => (0, String::new()),
                Ok(Err(message)) => (1, message),
                Err(_) => (3, "the child panicked".to_string()),
            };
            let _ = nix::unistd::write(&report_write, message.as_bytes());
            // SAFETY: `_exit` ends the forked child at once, without running the parent's atexit handlers
            // or destructors of state shared with the parent.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(report_write);
            drop(filter);
            parent(child);
            let status = wait_with_timeout(child, Duration::from_secs(20));
            let mut report = String::new();
            let _ = std::fs::File::from(report_read).read_to_string(&mut report);
            match status {
                WaitStatus::Exited(_, code) => Outcome::Exited(code, report),
                WaitStatus::Signaled(_, signal, _) => Outcome::Signaled(signal),
                other => panic!("unexpected child status {other:?}"),
            }
        }
    }
}

fn child_main(
    filter: Filter,
    body: impl FnOnce(Option<OwnedFd>) -> Result<(), String>,
) -> Result<(), String> {
    // A killed child must not leave a core file behind.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("setrlimit: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    let notify_fd = filter.load().map_err(|e| e.to_string())?;
    body(notify_fd)
}

fn wait_with_timeout(child: Pid, timeout: Duration) -> WaitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::StillAlive if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            WaitStatus::StillAlive => {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                panic!("the child did not finish within {timeout:?}");
            }
            status => return status,
        }
    }
}

/// A raw syscall: its return value, or the errno it failed with.
fn sys(nr: c_long, args: [u64; 3]) -> Result<i64, i32> {
    // SAFETY: the syscalls used here take integers or pointers to live buffers given by the caller.
    let ret = unsafe { libc::syscall(nr, args[0], args[1], args[2]) };
    if ret == -1 {
        Err(nix::errno::Errno::last_raw())
    } else {
        Ok(ret)
    }
}

fn expect_errno(what: &str, result: Result<i64, i32>, errno: i32) -> Result<(), String> {
    match result {
        Err(e) if e == errno => Ok(()),
        other => Err(format!("{what}: expected errno {errno}, got {other:?}")),
    }
}

fn expect_ok(what: &str, result: Result<i64, i32>) -> Result<i64, String> {
    result.map_err(|e| format!("{what}: expected success, got errno {e}"))
}

fn c_path(path: &'static std::ffi::CStr) -> u64 {
    path.as_ptr() as u64
}

#[test]
fn errno_and_trace_return_their_errno() {
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["chdir"], "action": "SCMP_ACT_TRACE"},
        ],
    }));
    let outcome = in_child(filter, |notify_fd| {
        if notify_fd.is_some() {
            return Err("a notify fd without SCMP_ACT_NOTIFY".into());
        }
        let mut buf = [0u8; 256];
        expect_errno(
            "getcwd",
            sys(libc::SYS_getcwd, [buf.as_mut_ptr() as u64, buf.len() as u64, 0]),
            77,
        )?;
        // Without the filter this would be ENOENT; errnoRet defaults to EPERM.
        expect_errno(
            "mkdir",
            sys(libc::SYS_mkdir, [c_path(c"/vessel-no-such-dir/x"), 0o755, 0]),
            libc::EPERM,
        )?;
        // SCMP_ACT_TRACE without a tracer: the kernel skips the call with ENOSYS.
        expect_errno("chdir", sys(libc::SYS_chdir, [c_path(c"/"), 0, 0]), libc::ENOSYS)?;
        expect_ok("getpid", sys(libc::SYS_getpid, [0; 3]))?;
        Ok(())
    });
    assert_eq!(outcome, PASSED);
}

#[test]
fn kill_process_kills_the_child_with_sigsys() {
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}],
    }));
    let outcome = in_child(filter, |_| {
        let _ = sys(libc::SYS_getppid, [0; 3]);
        Err("getppid returned under SCMP_ACT_KILL_PROCESS".into())
    });
    assert_eq!(outcome, Outcome::Signaled(Signal::SIGSYS));
}

static THREAD_RETURNED: AtomicBool = AtomicBool::new(false);

extern "C" fn call_getppid(_: *mut libc::c_void) -> *mut libc::c_void {
    let _ = sys(libc::SYS_getppid, [0; 3]);
    THREAD_RETURNED.store(true, Ordering::SeqCst);
    std::ptr::null_mut()
}

#[test]
fn kill_thread_kills_only_the_calling_thread() {
    // SCMP_ACT_KILL is SCMP_ACT_KILL_THREAD.
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL"}],
    }));
    let outcome = in_child(filter, |_| {
        let mut thread: libc::pthread_t = 0;
        // SAFETY: `thread` is a valid out-pointer, default attributes, and `call_getppid` is an
        // `extern "C"` function that ignores its (null) argument.
        let rc = unsafe {
            libc::pthread_create(&mut thread, std::ptr::null(), call_getppid, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(format!("pthread_create: {rc}"));
        }
        // SAFETY: `thread` was created above, is joinable and is joined once.
        let rc = unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(format!("pthread_join: {rc}"));
        }
        if THREAD_RETURNED.load(Ordering::SeqCst) {
            return Err("getppid returned under SCMP_ACT_KILL".into());
        }
        Ok(())
    });
    assert_eq!(outcome, PASSED, "the main thread must survive its killed thread");
}

static TRAPPED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigsys(_: libc::c_int) {
    TRAPPED.store(true, Ordering::SeqCst);
}

#[test]
fn trap_sends_sigsys_to_the_caller() {
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_TRAP"}],
    }));
    let outcome = in_child(filter, |_| {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_sigsys),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { nix::sys::signal::sigaction(Signal::SIGSYS, &action) }
            .map_err(|e| format!("sigaction: {e}"))?;
        let _ = sys(libc::SYS_getppid, [0; 3]);
        if !TRAPPED.load(Ordering::SeqCst) {
            return Err("no SIGSYS for getppid under SCMP_ACT_TRAP".into());
        }
        Ok(())
    });
    assert_eq!(outcome, PASSED);
}

#[test]
fn argument_conditions_select_the_calls() {
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            // AND over two arguments.
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV, "args": [
                {"index": 0, "value": libc::PRIO_PGRP, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 4444, "op": "SCMP_CMP_EQ"},
            ]},
            // OR over one argument tested twice.
            {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOTBLK, "args": [
                {"index": 0, "value": 111, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 222, "op": "SCMP_CMP_EQ"},
            ]},
            // value is the mask, valueTwo the datum.
            {"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ECHRNG, "args": [
                {"index": 0, "value": 0o700, "valueTwo": 0o700, "op": "SCMP_CMP_MASKED_EQ"},
            ]},
            {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EL2NSYNC, "args": [
                {"index": 0, "value": 1_000_000, "op": "SCMP_CMP_GT"},
            ]},
            {"names": ["sched_getscheduler"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ELNRNG, "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_LE"},
            ]},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXFULL, "args": [
                {"index": 0, "value": 0xffff_ffff_u64, "op": "SCMP_CMP_NE"},
            ]},
        ],
    }));
    let outcome = in_child(filter, |_| {
        let prio_pgrp = libc::PRIO_PGRP as u64;
        expect_errno(
            "getpriority(PGRP, 4444)",
            sys(libc::SYS_getpriority, [prio_pgrp, 4444, 0]),
            libc::EXDEV,
        )?;
        if sys(libc::SYS_getpriority, [0, 4444, 0]) == Err(libc::EXDEV) {
            return Err("getpriority(PROCESS, 4444) matched a rule for PGRP and 4444".into());
        }
        expect_ok(
            "getpriority(PGRP, 0)",
            sys(libc::SYS_getpriority, [prio_pgrp, 0, 0]),
        )?;

        expect_errno("getpgid(111)", sys(libc::SYS_getpgid, [111, 0, 0]), libc::ENOTBLK)?;
        expect_errno("getpgid(222)", sys(libc::SYS_getpgid, [222, 0, 0]), libc::ENOTBLK)?;
        expect_ok("getpgid(0)", sys(libc::SYS_getpgid, [0; 3]))?;

        expect_errno("umask(0777)", sys(libc::SYS_umask, [0o777, 0, 0]), libc::ECHRNG)?;
        expect_ok("umask(0077)", sys(libc::SYS_umask, [0o077, 0, 0]))?;
        expect_ok("umask(0022)", sys(libc::SYS_umask, [0o022, 0, 0]))?;

        expect_errno(
            "getsid(2000000)",
            sys(libc::SYS_getsid, [2_000_000, 0, 0]),
            libc::EL2NSYNC,
        )?;
        expect_ok("getsid(0)", sys(libc::SYS_getsid, [0; 3]))?;

        expect_errno(
            "sched_getscheduler(0)",
            sys(libc::SYS_sched_getscheduler, [0; 3]),
            libc::ELNRNG,
        )?;
        let me = std::process::id() as u64;
        expect_ok(
            "sched_getscheduler(self)",
            sys(libc::SYS_sched_getscheduler, [me, 0, 0]),
        )?;

        expect_ok(
            "personality(0xffffffff)",
            sys(libc::SYS_personality, [0xffff_ffff, 0, 0]),
        )?;
        expect_errno(
            "personality(0)",
            sys(libc::SYS_personality, [0, 0, 0]),
            libc::EXFULL,
        )?;
        Ok(())
    });
    assert_eq!(outcome, PASSED);
}

#[test]
fn default_errno_with_an_allow_list() {
    // The shape of real profiles: deny by default, allow what the process needs, personality only as a query.
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::ENOSYS,
        "syscalls": [
            {"names": ["exit", "exit_group", "write", "brk", "mmap", "munmap", "mremap", "madvise", "futex",
                       "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "getpid", "vessel_not_a_syscall"],
             "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0xffff_ffff_u64, "op": "SCMP_CMP_EQ"}]},
        ],
    }));
    assert_eq!(filter.skipped_syscalls(), ["vessel_not_a_syscall"]);
    let outcome = in_child(filter, |_| {
        expect_ok("getpid", sys(libc::SYS_getpid, [0; 3]))?;
        expect_ok(
            "personality(0xffffffff)",
            sys(libc::SYS_personality, [0xffff_ffff, 0, 0]),
        )?;
        expect_errno(
            "personality(0)",
            sys(libc::SYS_personality, [0, 0, 0]),
            libc::ENOSYS,
        )?;
        expect_errno("getppid", sys(libc::SYS_getppid, [0; 3]), libc::ENOSYS)?;
        Ok(())
    });
    assert_eq!(outcome, PASSED);
}

#[test]
fn log_allows_the_call() {
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_LOG"}],
    }));
    let outcome = in_child(filter, |_| {
        let mut buf = [0u8; 256];
        expect_ok(
            "getcwd",
            sys(libc::SYS_getcwd, [buf.as_mut_ptr() as u64, buf.len() as u64, 0]),
        )?;
        Ok(())
    });
    assert_eq!(outcome, PASSED);

    // LOG as the default: everything runs (and is logged) except what a rule says.
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_LOG",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77}],
    }));
    let outcome = in_child(filter, |_| {
        let mut buf = [0u8; 256];
        expect_ok(
            "getcwd",
            sys(libc::SYS_getcwd, [buf.as_mut_ptr() as u64, buf.len() as u64, 0]),
        )?;
        expect_errno(
            "mkdir",
            sys(libc::SYS_mkdir, [c_path(c"/vessel-no-such-dir/x"), 0o755, 0]),
            77,
        )?;
        Ok(())
    });
    assert_eq!(outcome, PASSED);
}

#[test]
fn log_action_is_logged_by_the_kernel() {
    // With no audit daemon the kernel prints seccomp's audit records (type 1326) to its log, at most 10 per
    // 5 s (printk_ratelimit) shared with every other record, such as the kill and trap records of the tests
    // around this one: a record that did not show up is tried again once the rate limit has let go.
    let mut seen = Vec::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(5500));
        }
        if let Some(found) = logged_getcwd(&mut seen) {
            assert!(found.contains("code=0x7ffc0000"), "{found}");
            return;
        }
    }
    let audit: Vec<&String> = seen.iter().filter(|l| l.contains("type=1326")).collect();
    panic!(
        "no seccomp LOG record for the child's getcwd in /dev/kmsg in 3 attempts (a kernel without \
         CONFIG_AUDITSYSCALL or an audit daemon taking the records would explain it); seccomp records seen: {audit:?}"
    );
}

/// Run a child whose getcwd is `SCMP_ACT_LOG` and return its audit record from the kernel log, if it shows.
fn logged_getcwd(seen: &mut Vec<String>) -> Option<String> {
    let mut kmsg = Kmsg::open_at_end();
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_LOG"}],
    }));
    let mut child_pid = None;
    let outcome = in_child_with(
        filter,
        |_| {
            let mut buf = [0u8; 256];
            expect_ok(
                "getcwd",
                sys(libc::SYS_getcwd, [buf.as_mut_ptr() as u64, buf.len() as u64, 0]),
            )?;
            Ok(())
        },
        |pid| child_pid = Some(pid),
    );
    assert_eq!(outcome, PASSED);
    let wanted = [
        "type=1326".to_string(),
        format!(" pid={} ", child_pid.unwrap()),
        format!(" syscall={} ", libc::SYS_getcwd),
    ];
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let new = kmsg.read_new();
        if let Some(found) = new
            .iter()
            .find(|line| wanted.iter().all(|w| line.contains(w.as_str())))
        {
            return Some(found.clone());
        }
        seen.extend(new);
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The kernel log, read from the point where it was opened.
struct Kmsg(std::fs::File);

impl Kmsg {
    fn open_at_end() -> Kmsg {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .unwrap_or_else(|e| panic!("/dev/kmsg: {e} (this test reads the kernel log as root)"));
        nix::unistd::lseek(file.as_raw_fd(), 0, nix::unistd::Whence::SeekEnd)
            .expect("seek /dev/kmsg to its end");
        Kmsg(file)
    }

    /// Records logged since the last call, one line each.
    fn read_new(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut record = vec![0u8; 8192];
        loop {
            match self.0.read(&mut record) {
                Ok(0) => break,
                Ok(n) => lines.push(String::from_utf8_lossy(&record[..n]).into_owned()),
                // EPIPE: records were overwritten before we read them; the next read goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        lines
    }
}

#[test]
fn notify_hands_a_working_listener_fd_to_the_agent() {
    let dir = TempDir::new("notify");
    let socket = dir.0.join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind agent socket");
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": socket,
        "listenerMetadata": "vessel-test",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }));
    assert!(filter.uses_notify());

    let child_socket = socket.clone();
    let mut received = None;
    let outcome = in_child_with(
        filter,
        move |notify_fd| {
            let fd = notify_fd.ok_or("no notify fd from a filter with SCMP_ACT_NOTIFY")?;
            let pid = std::process::id();
            let state =
                json!({"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": pid, "bundle": "/b"});
            send_notify_fd(&child_socket, &fd, state.to_string().as_bytes(), "vessel-test")
                .map_err(|e| e.to_string())?;
            drop(fd);
            // Blocks until the agent answers; it answers 4242.
            let ret = sys(libc::SYS_mkdir, [c_path(c"/vessel-no-such-dir/x"), 0o755, 0]);
            if ret != Ok(4242) {
                return Err(format!("mkdir: expected the agent's 4242, got {ret:?}"));
            }
            Ok(())
        },
        |_child| {
            // The agent: take the state and the fd, then answer the child's mkdir.
            if !readable(listener.as_raw_fd(), Duration::from_secs(10)) {
                return; // The child's report says why it never connected.
            }
            let got = receive_one(&listener);
            let notify_fd = got.fds.first().expect("an fd with the state").as_raw_fd();
            if readable(notify_fd, Duration::from_secs(10)) {
                let req = ScmpNotifReq::receive(notify_fd).expect("receive notification");
                let syscall = req.data.syscall;
                ScmpNotifResp::new_val(req.id, 4242, ScmpNotifRespFlags::empty())
                    .respond(notify_fd)
                    .expect("respond");
                received = Some((got.document, req.pid, syscall));
            }
        },
    );
    assert_eq!(outcome, PASSED);
    let (document, pid, syscall) = received.expect("the agent got no notification");
    assert_eq!(document["fds"], json!(["seccompFd"]));
    assert_eq!(document["metadata"], "vessel-test");
    assert_eq!(document["state"]["id"], "c1");
    assert_eq!(document["pid"], pid);
    assert_eq!(syscall, ScmpSyscall::from_name("mkdir").unwrap());
}

fn readable(fd: std::os::fd::RawFd, timeout: Duration) -> bool {
    // SAFETY: the caller keeps `fd` open for the duration of this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(borrowed, PollFlags::POLLIN)];
    let millis = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    matches!(poll(&mut fds, millis), Ok(n) if n > 0)
}
