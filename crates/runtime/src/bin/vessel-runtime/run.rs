//! `run`: create + start, then (unless detached) wait for the container, passing signals on to it, and
//! delete it when it exits.

use anyhow::Result;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use vessel_runtime::container::{self, CreateOptions, Runtime};

const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

pub fn run(rt: &Runtime, opts: &CreateOptions, detach: bool, keep: bool) -> Result<u8> {
    if !detach {
        // The init may be our grandchild (when an intermediate process forks it): become its reaper.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let record = container::create(rt, opts)?;
    let started = container::start(rt, &opts.id);
    if let Err(e) = started {
        let _ = container::delete(rt, &opts.id, true);
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    let code = wait_forwarding(record.pid)?;
    if !keep {
        container::delete(rt, &opts.id, true)?;
    }
    Ok(code)
}

/// Reap children until the init exits, forwarding the usual signals to it; its exit code (128+N for a signal).
fn wait_forwarding(init: i32) -> Result<u8> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    let sfd = SignalFd::new(&mask)?;
    loop {
        // Reap whatever has exited (the init, or orphans reparented to us).
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == init => return Ok(code as u8),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == init => return Ok(128 + sig as u8),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if let Some(info) = sfd.read_signal()? {
            if info.ssi_signo != Signal::SIGCHLD as u32 {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    let _ = kill(Pid::from_raw(init), sig);
                }
            }
        }
    }
}
