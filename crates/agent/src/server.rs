//! The agent's listener: one thread per session. In a guest the session whose process is the instance's
//! main one ends the VM: when it has told the host the exit status, the guest powers off.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, VsockAddr};

use crate::session::{Session, SessionError};

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket: the agent run as a normal process (tests, benchmarks).
    Unix(PathBuf),
    /// A vsock port of this guest.
    Vsock(u32),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Listen, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Listen::Unix(p.into()));
        }
        if let Some(p) = s.strip_prefix("vsock:") {
            return p
                .parse()
                .map(Listen::Vsock)
                .map_err(|_| format!("{p:?} is not a vsock port"));
        }
        Err(format!("{s:?}: use unix:PATH or vsock:PORT"))
    }
}

/// What happens when the instance's main process has exited and the host knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMainExit {
    /// Keep serving (an agent beside an image's own init, or on a host).
    Continue,
    /// Power the guest off (the agent is its PID 1's server).
    PowerOff,
}

/// How long the agent waits for the host to read the main process's status before it powers off.
const HOST_ACK_WAIT: Duration = Duration::from_secs(2);

fn listener(listen: &Listen) -> std::io::Result<Box<dyn Fn() -> std::io::Result<OwnedFd> + Send>> {
    match listen {
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path)?;
            Ok(Box::new(move || l.accept().map(|(s, _)| OwnedFd::from(s))))
        }
        Listen::Vsock(port) => {
            let fd = socket::socket(
                AddressFamily::Vsock,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(std::io::Error::from)?;
            socket::bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &VsockAddr::new(libc::VMADDR_CID_ANY, *port),
            )
            .map_err(std::io::Error::from)?;
            socket::listen(&fd, socket::Backlog::new(16).map_err(std::io::Error::from)?)
                .map_err(std::io::Error::from)?;
            Ok(Box::new(move || {
                let raw = socket::accept4(std::os::fd::AsRawFd::as_raw_fd(&fd), SockFlag::SOCK_CLOEXEC)
                    .map_err(std::io::Error::from)?;
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
            }))
        }
    }
}

/// Serves sessions until the process is killed (or, with [`OnMainExit::PowerOff`], the main one ends).
pub fn serve(listen: &Listen, on_main_exit: OnMainExit, setup: crate::session::Setup) -> std::io::Result<()> {
    let accept = listener(listen)?;
    loop {
        let conn = match accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("vessel-agent: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let keep = conn.try_clone().ok();
        std::thread::spawn(move || {
            let result = Session::new(conn).serve(setup);
            match result {
                Ok((_, true)) if on_main_exit == OnMainExit::PowerOff => {
                    if let Some(c) = keep {
                        wait_for_hangup(c);
                    }
                    crate::init::power_off();
                }
                Ok(_) | Err(SessionError::HostGone) => {}
                Err(e) => eprintln!("vessel-agent: session: {e}"),
            }
        });
    }
}

/// Until the host closes the connection (it has the exit status), or a short while.
fn wait_for_hangup(conn: OwnedFd) {
    // Only read(2) and SO_RCVTIMEO are used, which a vsock stream has as a unix one does.
    let s = std::os::unix::net::UnixStream::from(conn);
    let _ = s.set_read_timeout(Some(HOST_ACK_WAIT));
    let mut buf = [0u8; 256];
    while let Ok(n) = std::io::Read::read(&mut &s, &mut buf) {
        if n == 0 {
            break;
        }
    }
}
