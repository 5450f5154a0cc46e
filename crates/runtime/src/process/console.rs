//! The container's terminal: a pty made inside the container, its master sent to the caller's
//! `--console-socket`, its slave as the process's stdio and controlling terminal and bound to /dev/console.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::pty::{openpty, Winsize};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("Cannot create the container's terminal: {0}")]
    Pty(nix::Error),
    #[error("Cannot send the terminal to the console socket: {0}")]
    Send(nix::Error),
    #[error("Cannot make the terminal the process's {what}: {source}")]
    Setup { what: &'static str, source: nix::Error },
}

pub fn open(size: Option<(u16, u16)>) -> Result<(OwnedFd, OwnedFd), ConsoleError> {
    let ws = size.map(|(h, w)| Winsize {
        ws_row: h,
        ws_col: w,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let pty = openpty(ws.as_ref(), None).map_err(ConsoleError::Pty)?;
    Ok((pty.master, pty.slave))
}

/// Send the master over the console socket, named like the slave, as runc does.
pub fn send_master(socket: RawFd, master: &OwnedFd) -> Result<(), ConsoleError> {
    let name = slave_name(master).unwrap_or_else(|| "/dev/console".into());
    let fds = [master.as_raw_fd()];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        socket,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(ConsoleError::Send)?;
    Ok(())
}

fn slave_name(master: &OwnedFd) -> Option<String> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int to the pointer we pass.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) };
    (r == 0).then(|| format!("/dev/pts/{n}"))
}

/// Make the slave stdin/stdout/stderr and the controlling terminal (the caller made a new session), and
/// bind it over /dev/console when that exists in the container.
pub fn attach(master: &OwnedFd, slave: OwnedFd) -> Result<(), ConsoleError> {
    let setup = |what| move |source| ConsoleError::Setup { what, source };
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).map_err(setup("stdio"))?;
    }
    // SAFETY: TIOCSCTTY takes an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(setup("controlling terminal")(nix::Error::last()));
    }
    if let Some(name) = slave_name(master) {
        let console = Path::new("/dev/console");
        if !console.exists() {
            let _ = std::fs::File::create(console);
        }
        if console.exists() {
            mount(
                Some(Path::new(&name)),
                console,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(setup("/dev/console"))?;
        }
    }
    Ok(())
}
