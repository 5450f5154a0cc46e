//! The jail's processes: the jailer forks the jail's PID 1 into a new PID namespace; PID 1
//! joins the cgroups, enters its mount and network namespaces, pivots into the jail's root,
//! drops its privileges and starts the VMM as PID 2, then forwards signals to it and mirrors its
//! end. A set-up failure inside is sent back over a close-on-exec pipe: the jailer reads either
//! that message or nothing (the VMM's exec closed the pipe).

use super::cgroup::Cgroups;
use super::{JailError, Plan};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Signals the jailer and the jail's PID 1 pass on to the VMM.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

fn sys(what: &'static str) -> impl FnOnce(std::io::Error) -> JailError {
    move |source| JailError::Sys { what, source }
}

fn check(what: &'static str, rc: libc::c_int) -> Result<(), String> {
    if rc < 0 {
        Err(format!("Cannot {what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

fn cstring(bytes: &[u8]) -> Result<CString, JailError> {
    CString::new(bytes).map_err(|_| JailError::Setup("an argument contains a NUL byte".into()))
}

/// Everything PID 1 needs, prepared before the fork.
struct Inside<'a> {
    root: CString,
    exec: CString,
    argv: Vec<CString>,
    netns: Option<CString>,
    uid: u32,
    gid: u32,
    last_cap: u32,
    cgroups: &'a Cgroups,
}

/// Runs the jail and returns the VMM's exit status (128 + signal when a signal ended it).
pub(super) fn run_jailed(plan: &Plan, root: &Path, cgroups: &Cgroups) -> Result<i32, JailError> {
    let exec = format!("/{}", plan.exec_name);
    let mut argv = vec![cstring(plan.exec_name.as_bytes())?];
    for arg in &plan.vmm_args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let inside = Inside {
        root: cstring(root.as_os_str().as_bytes())?,
        exec: cstring(exec.as_bytes())?,
        argv,
        netns: plan
            .netns
            .as_ref()
            .map(|p| cstring(p.as_os_str().as_bytes()))
            .transpose()?,
        uid: plan.uid,
        gid: plan.gid,
        last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63),
        cgroups,
    };
    let (report_read, report_write) = pipe()?;
    let forwarded = block_signals();
    // SAFETY: only affects the PID namespace of the children forked from here on.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(sys("create a PID namespace")(std::io::Error::last_os_error()));
    }
    // SAFETY: the jailer is single-threaded, so the child may run any code after the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sys("fork the jail's first process")(
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        drop(report_read);
        let mut report = Some(report_write);
        let code = match pid1(&inside, &mut report) {
            Ok(code) => code,
            Err(message) => {
                if let Some(fd) = &report {
                    let _ = write_all(fd, message.as_bytes());
                }
                1
            }
        };
        // SAFETY: ends the jail's PID 1 without unwinding into the jailer's code.
        unsafe { libc::_exit(code) };
    }
    drop(report_write);
    let mut message = String::new();
    let _ = std::fs::File::from(report_read).read_to_string(&mut message);
    let status = wait_forwarding(pid, &forwarded);
    if !message.is_empty() {
        return Err(JailError::Setup(message));
    }
    Ok(status)
}

/// Writes `bytes` to `fd` (the report pipe).
fn write_all(fd: &OwnedFd, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::from(fd.try_clone()?);
    file.write_all(bytes)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), JailError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys("create a pipe")(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Blocks the forwarded signals and SIGCHLD (they are then taken with sigwaitinfo).
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; the calls initialise and fill it, then block it for the
    // calling (only) thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *signal);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for `child`, passing the forwarded signals on to it; returns its exit status.
fn wait_forwarding(child: libc::pid_t, set: &libc::sigset_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: a non-blocking wait for our own child with a valid out-pointer.
        let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if done == child {
            return if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            };
        }
        if done < 0 {
            return 1;
        }
        // SAFETY: `set` is an initialised signal set; no siginfo is asked for.
        let signal = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if FORWARDED.contains(&signal) {
            // SAFETY: sends a signal to our own child.
            unsafe { libc::kill(child, signal) };
        }
    }
}

/// The jail's PID 1: enter the jail, start the VMM, mirror its end. Errors are messages for the
/// jailer.
fn pid1(inside: &Inside, report: &mut Option<OwnedFd>) -> Result<i32, String> {
    inside.cgroups.join().map_err(|e| e.to_string())?;
    enter_namespaces(inside)?;
    pivot_into(&inside.root)?;
    drop_privileges(inside)?;
    // SAFETY: the jail dies with the jailer (a SIGKILLed jailer leaves no VMM behind); set after
    // the uid change, which clears it.
    check("set the parent-death signal", unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0)
    })?;
    // SAFETY: PID 1 is single-threaded; the child only resets its signal mask and execs.
    let vmm = unsafe { libc::fork() };
    check("fork the VMM", vmm)?;
    if vmm == 0 {
        let err = exec_vmm(inside);
        if let Some(fd) = report {
            let _ = write_all(fd, err.as_bytes());
        }
        // SAFETY: leaves the failed child at once.
        unsafe { libc::_exit(127) };
    }
    // The VMM's exec closes its copy; with this one closed the jailer sees the start succeed.
    drop(report.take());
    let set = block_signals();
    Ok(wait_forwarding_reaping(vmm, &set))
}

/// PID 1's wait: reaps every child (orphans land on PID 1) and returns the VMM's status.
fn wait_forwarding_reaping(vmm: libc::pid_t, set: &libc::sigset_t) -> i32 {
    loop {
        loop {
            let mut status = 0;
            // SAFETY: non-blocking reap of any child, valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == vmm {
                return if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    libc::WEXITSTATUS(status)
                };
            }
            if pid <= 0 {
                break;
            }
        }
        // SAFETY: `set` is initialised; no siginfo is asked for.
        let signal = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if FORWARDED.contains(&signal) {
            // SAFETY: sends a signal to PID 1's own child.
            unsafe { libc::kill(vmm, signal) };
        }
    }
}

fn enter_namespaces(inside: &Inside) -> Result<(), String> {
    match &inside.netns {
        Some(path) => {
            // SAFETY: a NUL-terminated path; the descriptor is closed right after setns.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            check("open the network namespace", fd)?;
            // SAFETY: `fd` is the namespace file just opened; closed once joined.
            let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
            // SAFETY: closes the descriptor opened above.
            unsafe { libc::close(fd) };
            check("join the network namespace", rc)?;
        }
        // SAFETY: a new, empty network namespace for this process.
        None => check("create a network namespace", unsafe {
            libc::unshare(libc::CLONE_NEWNET)
        })?,
    }
    // SAFETY: a mount namespace of this process's own.
    check("create a mount namespace", unsafe {
        libc::unshare(libc::CLONE_NEWNS)
    })
}

/// Makes the jail's root this process's `/`, with nothing of the host's tree left reachable.
fn pivot_into(root: &CString) -> Result<(), String> {
    let none = std::ptr::null();
    // SAFETY: constant arguments: no mount event propagates back to the host from here on.
    check("make the mounts private", unsafe {
        libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })?;
    // SAFETY: `root` is a NUL-terminated path; a bind mount of it onto itself makes it a mount
    // point, which pivot_root requires.
    check("bind-mount the jail's root", unsafe {
        libc::mount(
            root.as_ptr(),
            root.as_ptr(),
            none,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    })?;
    // SAFETY: changes this process's working directory to the jail's root.
    check("enter the jail's root", unsafe { libc::chdir(root.as_ptr()) })?;
    // SAFETY: pivot_root(".", ".") stacks the old root under the new one at "."; detaching it
    // leaves only the jail. The path arguments are constant strings.
    unsafe {
        check(
            "pivot into the jail's root",
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
        )?;
        check(
            "detach the host's root",
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
        )?;
        check("enter the new root", libc::chdir(c"/".as_ptr()))?;
    }
    Ok(())
}

/// Drops to the VM's uid and gid with no supplementary groups, no capabilities (bounding,
/// ambient, effective, permitted, inheritable) and no way to gain privileges again.
fn drop_privileges(inside: &Inside) -> Result<(), String> {
    for cap in 0..=inside.last_cap {
        // SAFETY: drops one capability from the bounding set; unknown ones fail harmlessly.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    }
    // SAFETY: constant arguments.
    check("clear the ambient capabilities", unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    let gid = inside.gid;
    // SAFETY: an empty group list, then plain id changes.
    unsafe {
        check(
            "clear the supplementary groups",
            libc::setgroups(0, std::ptr::null()),
        )?;
        check("set the gid", libc::setresgid(gid, gid, gid))?;
        check("set the uid", libc::setresuid(inside.uid, inside.uid, inside.uid))?;
        check(
            "set no-new-privileges",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        )?;
    }
    clear_capabilities()
}

/// Empties the effective, permitted and inheritable sets (already empty after a change to a
/// non-zero uid; this covers uid 0).
fn clear_capabilities() -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data::default(); 2];
    // SAFETY: a version-3 header for this process and the two data words version 3 expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check("clear the capabilities", rc as libc::c_int)
}

/// The VMM's child: default signal mask, a clean environment, exec. Returns only on failure.
fn exec_vmm(inside: &Inside) -> String {
    let mut argv: Vec<*const libc::c_char> = inside.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env = [std::ptr::null::<libc::c_char>()];
    // SAFETY: unblocks every signal in this (single-threaded) child, then execs with
    // NULL-terminated argv and envp arrays of NUL-terminated strings that outlive the call.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_UNBLOCK, &all, std::ptr::null_mut());
        libc::execve(inside.exec.as_ptr(), argv.as_ptr(), env.as_ptr());
    }
    format!(
        "Cannot run {} inside the jail: {}",
        inside.exec.to_string_lossy(),
        std::io::Error::last_os_error()
    )
}
