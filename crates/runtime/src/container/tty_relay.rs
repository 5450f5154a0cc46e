//! Relaying a container's terminal to ours when `run` has no console socket from its caller: we listen on a
//! socket of our own, receive the pty master, put our terminal in raw mode and copy bytes both ways.

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

use super::ContainerError;

fn io_err<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Our listening console socket; removed when dropped.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn bind(id: &str) -> Result<ConsoleSocket, ContainerError> {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("vessel-console-{}-{id}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io_err("listen on", &path))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Take the pty master the container's init sends.
    pub fn receive(self) -> Result<TerminalRelay, ContainerError> {
        let (conn, _) = self.listener.accept().map_err(io_err("accept on", &self.path))?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(ContainerError::os("receive the container's terminal"))?;
        let mut master = None;
        for c in msg
            .cmsgs()
            .map_err(ContainerError::os("read the console message"))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel just installed these descriptors in our table; we take ownership.
                master = fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
        let master = master.ok_or_else(|| ContainerError::Init("The container sent no terminal".into()))?;
        TerminalRelay::new(master)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub struct TerminalRelay {
    master: std::fs::File,
    saved: Option<Termios>,
    stdin_open: bool,
    master_open: bool,
}

impl TerminalRelay {
    fn new(master: OwnedFd) -> Result<TerminalRelay, ContainerError> {
        let stdin = std::io::stdin();
        // Raw mode only when our stdin is a terminal; piped input is copied as it is.
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(orig) = &saved {
            let mut raw = orig.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
                .map_err(ContainerError::os("set raw mode"))?;
        }
        let relay = TerminalRelay {
            master: std::fs::File::from(master),
            saved,
            stdin_open: true,
            master_open: true,
        };
        relay.copy_window_size();
        Ok(relay)
    }

    pub fn master(&self) -> &std::fs::File {
        &self.master
    }

    pub fn stdin_open(&self) -> bool {
        self.stdin_open
    }

    pub fn master_open(&self) -> bool {
        self.master_open
    }

    pub fn copy_window_size(&self) {
        let mut ws: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ fills the struct we pass; TIOCSWINSZ reads it.
        unsafe {
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }

    pub fn stdin_to_master(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        match std::io::stdin().lock().read(&mut buf) {
            Ok(0) | Err(_) => {
                // End of our input: tell the container's terminal (^D in canonical mode).
                self.stdin_open = false;
                let _ = self.master.write_all(&[4]);
            }
            Ok(n) => {
                let _ = self.master.write_all(&buf[..n]);
            }
        }
    }

    pub fn master_to_stdout(&mut self) {
        let mut buf = [0u8; 64 * 1024];
        match self.master.read(&mut buf) {
            // EIO: every slave end is closed.
            Ok(0) | Err(_) => self.master_open = false,
            Ok(n) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
        }
    }

    /// Copy what the container wrote before it exited.
    pub fn drain(&mut self) {
        let fd = self.master.as_fd();
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        while self.master_open {
            let mut pfd = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if !matches!(nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0) {
                break;
            }
            self.master_to_stdout();
        }
    }
}

impl Drop for TerminalRelay {
    fn drop(&mut self) {
        if let Some(orig) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, orig);
        }
    }
}
