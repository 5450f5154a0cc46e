//! One session of the agent: a connection from the host, the process it runs, and the relay between them
//! (stdio or a terminal as frames, signals, resize, stats) until the process exits and its status is sent.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use vessel_api::frames::{self, Decoder, FrameKind};

use crate::proto::{self, Process, Reply, Request};

/// Reads of the process's output and of the host's frames.
const READ_BUF: usize = 16 * 1024;
/// Output still read after the process exited (descendants may hold the pipes).
const DRAIN_LIMIT: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the host went away")]
    HostGone,
    #[error(transparent)]
    Proto(#[from] proto::ProtoError),
    #[error("cannot {0}: {1}")]
    Os(&'static str, std::io::Error),
}

/// What the agent does with a session's setup (the guest's hostname, interfaces, files); the server
/// supplies it, so a session run on a normal host (tests) changes nothing there.
pub type Setup = fn(&proto::GuestSetup) -> Result<(), String>;

/// The process's output: two pipes, or a terminal's master.
enum Output {
    Pipes { out: Option<File>, err: Option<File> },
    Terminal { master: Option<File> },
}

pub struct Session {
    conn: File,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl Session {
    pub fn new(conn: OwnedFd) -> Session {
        Session {
            conn: File::from(conn),
            decoder: Decoder::default(),
            buf: vec![0u8; READ_BUF],
        }
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        self.conn.write_all(frame).map_err(|_| SessionError::HostGone)
    }

    /// The next frame from the host (blocking).
    fn next_frame(&mut self) -> Result<(FrameKind, Vec<u8>), SessionError> {
        loop {
            if let Some(f) = self.decoder.next_frame().map_err(proto::ProtoError::from)? {
                return Ok(f);
            }
            let n = self
                .conn
                .read(&mut self.buf)
                .map_err(|_| SessionError::HostGone)?;
            if n == 0 {
                return Err(SessionError::HostGone);
            }
            self.decoder.push(&self.buf[..n]);
        }
    }

    fn next_request(&mut self) -> Result<Request, SessionError> {
        loop {
            let (kind, payload) = self.next_frame()?;
            if kind == FrameKind::Control {
                return Ok(proto::parse_request(&payload)?);
            }
        }
    }

    fn refuse(&mut self, message: String) -> SessionError {
        let _ = self.send(&proto::control(&Reply::Error {
            message: message.clone(),
        }));
        SessionError::Proto(proto::ProtoError::Message(message))
    }

    /// The whole session: hello, run, relay. Returns the process's exit status (128 + N for a signal N),
    /// once the host has been told it, and whether it was the instance's main process.
    pub fn serve(mut self, setup: Setup) -> Result<(i32, bool), SessionError> {
        match self.next_request()? {
            Request::Hello { version } if version == proto::VERSION => {}
            Request::Hello { version } => {
                return Err(self.refuse(format!(
                    "the agent speaks protocol version {}, the host {version}",
                    proto::VERSION
                )))
            }
            other => return Err(self.refuse(format!("expected hello, got {other:?}"))),
        }
        self.send(&proto::control(&Reply::Hello {
            version: proto::VERSION,
            agent: format!("vessel-agent {}", env!("CARGO_PKG_VERSION")),
        }))?;
        let (process, main, guest) = match self.next_request()? {
            Request::Run { process, main, setup } => (process, main, setup),
            other => return Err(self.refuse(format!("expected run, got {other:?}"))),
        };
        if let Some(g) = &guest {
            if let Err(e) = setup(g) {
                return Err(self.refuse(format!("guest setup: {e}")));
            }
        }
        let (pid, output, stdin) = match spawn(&process) {
            Ok(v) => v,
            Err(e) => return Err(self.refuse(format!("cannot run {:?}: {e}", process.args))),
        };
        self.send(&proto::control(&Reply::Started { pid }))?;
        Ok((self.relay(pid, output, stdin)?, main))
    }

    fn relay(&mut self, pid: i32, mut output: Output, mut stdin: Option<File>) -> Result<i32, SessionError> {
        let pidfd = pidfd_open(pid).map_err(|e| SessionError::Os("watch the process", e))?;
        let mut exit: Option<i32> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            if let Some(deadline) = drain_until {
                if !output_open(&output) || Instant::now() >= deadline {
                    break;
                }
            }
            let (a, b) = match &output {
                Output::Pipes { out, err } => (out.as_ref(), err.as_ref()),
                Output::Terminal { master } => (master.as_ref(), None),
            };
            let conn_fd = self.conn.as_fd();
            // An absent stream is polled as the connection with no events asked.
            fn fd_or<'a>(
                f: Option<&'a File>,
                other: std::os::fd::BorrowedFd<'a>,
            ) -> std::os::fd::BorrowedFd<'a> {
                f.map_or(other, |f| f.as_fd())
            }
            let flags = |f: Option<&File>| {
                if f.is_some() {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                }
            };
            let watching_exit = exit.is_none();
            let mut fds = [
                PollFd::new(conn_fd, PollFlags::POLLIN),
                PollFd::new(fd_or(a, conn_fd), flags(a)),
                PollFd::new(fd_or(b, conn_fd), flags(b)),
                PollFd::new(
                    pidfd.as_fd(),
                    if watching_exit {
                        PollFlags::POLLIN
                    } else {
                        PollFlags::empty()
                    },
                ),
            ];
            let timeout = if drain_until.is_some() {
                PollTimeout::from(50u16)
            } else {
                PollTimeout::NONE
            };
            if poll(&mut fds, timeout).is_err() {
                continue;
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            if ready[0] && !self.host_frames(pid, &mut output, &mut stdin)? {
                // The host is gone: nobody wants the process any more.
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), None);
                return Err(SessionError::HostGone);
            }
            if ready[1] {
                self.read_output(&mut output, false)?;
            }
            if ready[2] {
                self.read_output(&mut output, true)?;
            }
            if ready[3] && watching_exit {
                exit = Some(match waitpid(Pid::from_raw(pid), None) {
                    Ok(WaitStatus::Exited(_, c)) => c,
                    Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
                    _ => -1,
                });
                drain_until = Some(Instant::now() + DRAIN_LIMIT);
            }
        }
        let code = exit.unwrap_or(-1);
        self.send(&frames::encode_exit(code))?;
        Ok(code)
    }

    /// Frames from the host; false when it hung up.
    fn host_frames(
        &mut self,
        pid: i32,
        output: &mut Output,
        stdin: &mut Option<File>,
    ) -> Result<bool, SessionError> {
        let n = match self.conn.read(&mut self.buf) {
            Ok(0) | Err(_) => return Ok(false),
            Ok(n) => n,
        };
        self.decoder.push(&self.buf[..n]);
        while let Some((kind, payload)) = self.decoder.next_frame().map_err(proto::ProtoError::from)? {
            match kind {
                FrameKind::Stdin => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&payload).is_err() {
                            *stdin = None;
                        }
                    }
                }
                FrameKind::StdinEof => match output {
                    // End of input on a terminal is ^D in canonical mode.
                    Output::Terminal { .. } => {
                        if let Some(s) = stdin.as_mut() {
                            let _ = s.write_all(&[4]);
                        }
                    }
                    Output::Pipes { .. } => *stdin = None,
                },
                FrameKind::Resize => {
                    if let (Some((rows, cols)), Output::Terminal { master: Some(m) }) =
                        (frames::decode_resize(&payload), &*output)
                    {
                        set_size(m, rows, cols);
                    }
                }
                FrameKind::Control => match proto::parse_request(&payload)? {
                    Request::Signal { signal } => {
                        if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
                            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                        }
                    }
                    Request::Stats => {
                        let stats = crate::stats::read();
                        self.send(&proto::control(&Reply::Stats(stats)))?;
                    }
                    other => {
                        let message = format!("unexpected {other:?} during a session");
                        self.send(&proto::control(&Reply::Error { message }))?;
                    }
                },
                _ => {}
            }
        }
        Ok(true)
    }

    fn read_output(&mut self, output: &mut Output, second: bool) -> Result<(), SessionError> {
        let (file, kind) = match output {
            Output::Pipes { out, err } if second => (err, FrameKind::Stderr),
            Output::Pipes { out, .. } => (out, FrameKind::Stdout),
            Output::Terminal { master } => (master, FrameKind::Stdout),
        };
        let Some(f) = file.as_mut() else { return Ok(()) };
        match f.read(&mut self.buf) {
            // EIO on a terminal: every slave end is closed.
            Ok(0) | Err(_) => *file = None,
            Ok(n) => {
                let frame = frames::encode(kind, &self.buf[..n]);
                self.send(&frame)?;
            }
        }
        Ok(())
    }
}

fn output_open(o: &Output) -> bool {
    match o {
        Output::Pipes { out, err } => out.is_some() || err.is_some(),
        Output::Terminal { master } => master.is_some(),
    }
}

fn set_size(f: &File, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass, on a terminal descriptor we own.
    unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Starts the process with its ids, limits, directory and environment, on pipes or a new terminal whose
/// controlling process it is.
fn spawn(p: &Process) -> std::io::Result<(i32, Output, Option<File>)> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let program = p.args.first().ok_or_else(|| invalid("no program".into()))?;
    let mut limits = Vec::new();
    for (name, soft, hard) in &p.rlimits {
        let r = rlimit_resource(name).ok_or_else(|| invalid(format!("unknown rlimit {name}")))?;
        limits.push((r, *soft, *hard));
    }
    let mut cmd = Command::new(resolve(program, &p.env));
    cmd.arg0(program)
        .args(&p.args[1..])
        .env_clear()
        .current_dir(&p.cwd);
    for kv in &p.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let (uid, gid, groups, tty) = (p.uid, p.gid, p.additional_gids.clone(), p.tty);
    // SAFETY: the closure makes only async-signal-safe calls (setsid, ioctl, setrlimit, setgroups, setgid,
    // setuid) on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if tty && (libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0) {
                return Err(std::io::Error::last_os_error());
            }
            for (r, soft, hard) in &limits {
                let l = libc::rlimit {
                    rlim_cur: *soft,
                    rlim_max: *hard,
                };
                if libc::setrlimit(*r, &l) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Only root can (and must) change ids; the agent run by a user keeps its own.
            if libc::getuid() == 0
                && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if p.tty {
        let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        let master = File::from(pty.master);
        if p.rows > 0 && p.cols > 0 {
            set_size(&master, p.rows, p.cols);
        }
        let slave = File::from(pty.slave);
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn()?;
        let stdin = master.try_clone().ok();
        return Ok((
            child.id() as i32,
            Output::Terminal { master: Some(master) },
            stdin,
        ));
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let take = |f: Option<OwnedFd>| f.map(File::from);
    let stdin = take(child.stdin.take().map(OwnedFd::from));
    let out = take(child.stdout.take().map(OwnedFd::from));
    let err = take(child.stderr.take().map(OwnedFd::from));
    Ok((child.id() as i32, Output::Pipes { out, err }, stdin))
}

/// The program's path: as given when it has a '/', else the first match in the process's PATH (the
/// image's, not the agent's).
fn resolve(program: &str, env: &[String]) -> std::path::PathBuf {
    if program.contains('/') {
        return program.into();
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| {
                    m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false)
        })
        .unwrap_or_else(|| program.into())
}
