//! `run`: create + start, then (unless detached) wait for the container: pass signals on to it, relay its
//! terminal when it has one and the caller gave no console socket, and delete it when it exits.

use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::tty_relay::{self, TerminalRelay};
use super::{delete, start, ContainerError, CreateOptions, Runtime};

const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub create: CreateOptions,
    /// Return once the container started.
    pub detach: bool,
    /// Keep the container's state after it exits.
    pub keep: bool,
}

/// Returns the container's exit code (128+N when killed by signal N), or 0 when detached.
pub fn run(rt: &Runtime, opts: &RunOptions) -> Result<i32, ContainerError> {
    let mut create_opts = opts.create.clone();
    let bundle = crate::spec::Bundle::load(&create_opts.bundle)?;
    let wants_tty = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // A terminal with nobody to take it: we take it, through a console socket of our own.
    let relay_socket = if wants_tty && create_opts.console_socket.is_none() && !opts.detach {
        let socket = tty_relay::ConsoleSocket::bind(&create_opts.id)?;
        create_opts.console_socket = Some(socket.path.clone());
        Some(socket)
    } else {
        None
    };
    if !opts.detach {
        // The init may be our grandchild (when an intermediate process forks it): become its reaper.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let record = super::create::create_from(rt, &create_opts, bundle)?;
    let relay = match relay_socket.map(|s| s.receive()).transpose() {
        Ok(r) => r,
        Err(e) => {
            let _ = delete(rt, &create_opts.id, true);
            return Err(e);
        }
    };
    if let Err(e) = start(rt, &create_opts.id) {
        let _ = delete(rt, &create_opts.id, true);
        return Err(e);
    }
    if opts.detach {
        return Ok(0);
    }
    let code = wait_forwarding(record.pid, relay)?;
    if !opts.keep {
        delete(rt, &create_opts.id, true)?;
    }
    Ok(code)
}

/// Reap children until the init exits, forwarding the usual signals to it and relaying its terminal.
pub(super) fn wait_forwarding(init: i32, relay: Option<TerminalRelay>) -> Result<i32, ContainerError> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGWINCH);
    mask.thread_block().map_err(ContainerError::os("block signals"))?;
    let sfd = SignalFd::new(&mask).map_err(ContainerError::os("create a signalfd"))?;
    let mut relay = relay;
    loop {
        if let Some(code) = reap(init) {
            if let Some(r) = relay.as_mut() {
                r.drain();
            }
            return Ok(code);
        }
        let stdin = std::io::stdin();
        let never = PollFlags::empty();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(r) = relay.as_ref() {
            // A closed side stays in the set with no events, so indexes stay fixed.
            fds.push(PollFd::new(
                stdin.as_fd(),
                if r.stdin_open() { PollFlags::POLLIN } else { never },
            ));
            fds.push(PollFd::new(
                r.master().as_fd(),
                if r.master_open() { PollFlags::POLLIN } else { never },
            ));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(ContainerError::os("wait for the container")(e)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            if let Ok(Some(info)) = sfd.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(Signal::SIGWINCH) => {
                        if let Some(r) = relay.as_ref() {
                            r.copy_window_size();
                        }
                    }
                    Ok(sig) => {
                        let _ = kill(Pid::from_raw(init), sig);
                    }
                    Err(_) => {}
                }
            }
        }
        if let Some(r) = relay.as_mut() {
            if ready.get(1) == Some(&true) {
                r.stdin_to_master();
            }
            if ready.get(2) == Some(&true) {
                r.master_to_stdout();
            }
        }
    }
}

/// The init's exit code once it has exited (reaping anything else that exited too).
fn reap(init: i32) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == init => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == init => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}
