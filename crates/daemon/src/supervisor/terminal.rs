//! The container's terminal: a console socket the container's init sends its pty master on, and window
//! size changes on that master.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::{os, SupervisorError};

/// Listens beside the attach socket; removed when dropped.
pub struct ConsoleListener {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleListener {
    pub fn bind(attach_socket: &Path) -> Result<ConsoleListener, SupervisorError> {
        let path = attach_socket.with_extension("console");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|source| SupervisorError::Io {
            action: "listen on",
            path: path.clone(),
            source,
        })?;
        Ok(ConsoleListener { path, listener })
    }

    /// The pty master the container's init sends (it has, once create returned).
    pub fn receive(self) -> Result<File, SupervisorError> {
        let (conn, _) = self.listener.accept().map_err(|source| SupervisorError::Io {
            action: "accept on",
            path: self.path.clone(),
            source,
        })?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(os("receive the container's terminal"))?;
        for c in msg.cmsgs().map_err(os("read the console message"))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the kernel just installed this descriptor in our table; we take ownership.
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(*fd) }));
                }
            }
        }
        Err(SupervisorError::Os {
            action: "receive the container's terminal (none was sent)",
            source: nix::Error::EBADMSG,
        })
    }
}

impl Drop for ConsoleListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass; a bad fd only makes it fail.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// The terminal size vesseld asked for (`--tty-size ROWSxCOLS`).
pub fn requested_size(tty_size: Option<&str>) -> Option<(u16, u16)> {
    let (rows, cols) = tty_size?.split_once('x')?;
    Some((rows.parse().ok()?, cols.parse().ok()?))
}
