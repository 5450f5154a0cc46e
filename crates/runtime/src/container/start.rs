//! `start`: release a created container's init from the exec fifo, then run the poststart hooks.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{ContainerError, Runtime};
use crate::hooks;
use crate::state::Status;

/// After the init's byte: until its end of the fifo closes, which happens at the execve of the container's
/// program (the descriptor is close-on-exec) or when the init dies.
fn wait_for_exec(
    fifo: &mut std::fs::File,
    record: &crate::state::ContainerRecord,
) -> Result<(), ContainerError> {
    let mut byte = [0u8; 1];
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(ContainerError::os("wait for the container's program")(e)),
        }
        match fifo.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(()),
        }
        if !record.init_alive() {
            return Ok(());
        }
    }
}

pub fn start(rt: &Runtime, id: &str) -> Result<(), ContainerError> {
    let sd = rt.open(id, true)?;
    let record = sd.load()?;
    let status = record.status(&sd);
    if status != Status::Created {
        return Err(ContainerError::WrongStatus {
            id: id.into(),
            status,
            action: "start it (it must be created)",
        });
    }
    let fifo_path = sd.fifo_path();
    // Non-blocking open: a reader may open a fifo with no writer yet; the init's blocked open for writing
    // completes as soon as we are here.
    let mut fifo = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo_path)
        .map_err(|source| ContainerError::Io {
            action: "open",
            path: fifo_path.clone(),
            source,
        })?;
    let mut byte = [0u8; 1];
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::Error::EINTR) => {}
            Ok(_) => match fifo.read(&mut byte) {
                Ok(1) => break,
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(source) => {
                    return Err(ContainerError::Io {
                        action: "read",
                        path: fifo_path,
                        source,
                    })
                }
            },
            Err(e) => return Err(ContainerError::os("wait for the container's init")(e)),
        }
        if !record.init_alive() {
            return Err(ContainerError::Init(format!(
                "Container {id}'s init process exited before start"
            )));
        }
    }
    wait_for_exec(&mut fifo, &record)?;
    let _ = std::fs::remove_file(&fifo_path);
    if let Some(h) = record.spec.hooks() {
        let state = record.state_json(Status::Running).to_string();
        // The runtime-spec (1.1+): a failing poststart hook is an error and the container is stopped.
        if let Err(e) = hooks::run_all("poststart", h.poststart().as_ref(), &state) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(record.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(e.into());
        }
    }
    Ok(())
}
