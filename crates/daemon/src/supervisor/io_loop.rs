//! The supervisor's life: create the container on our pipes (or a terminal), then one poll loop over its
//! output, the attach socket and its clients, and SIGCHLD, until the container's init exits; then drain,
//! clean up and record the exit.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use vessel_api::frames::{self, Decoder, FrameKind};
use vessel_runtime::container::{self, CreateOptions, Runtime};

use super::logfile::LogWriter;
use super::{os, pipe, terminal, ExitRecord, RunArgs, SupervisorError};

/// How long output is still read after the init exited (processes it left may hold the pipes).
const DRAIN_LIMIT: Duration = Duration::from_millis(500);
/// A client that cannot take a frame for this long is dropped rather than stall the container.
const CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads of the container's output and of clients' frames (a pipe holds 64 KiB; a few more reads of a
/// flood cost less than the resident pages of a bigger buffer in every supervisor).
const READ_BUF: usize = 8 * 1024;

/// The instance's output side: two pipes, one terminal, or a VM's guest-agent session (whose frames carry
/// the main process's output and, last, its exit status).
pub(super) enum Output {
    Pipes {
        out: Option<File>,
        err: Option<File>,
    },
    Terminal {
        master: Option<File>,
    },
    Agent {
        conn: Option<File>,
        decoder: Decoder,
        exit: Option<i32>,
    },
}

impl Output {
    pub(super) fn agent(conn: File, decoder: Decoder) -> Output {
        Output::Agent {
            conn: Some(conn),
            decoder,
            exit: None,
        }
    }

    /// A VM whose main process has not started yet.
    pub(super) fn waiting_for_agent() -> Output {
        Output::Agent {
            conn: None,
            decoder: Decoder::default(),
            exit: None,
        }
    }
}

/// An attached client: a connection to our socket, or (for exec) our own stdin and stdout.
struct Client {
    reader: File,
    writer: File,
    decoder: Decoder,
}

impl Client {
    fn from_stream(stream: UnixStream) -> Option<Client> {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(CLIENT_SEND_TIMEOUT));
        let writer = File::from(OwnedFd::from(stream.try_clone().ok()?));
        Some(Client {
            reader: File::from(OwnedFd::from(stream)),
            writer,
            decoder: Decoder::default(),
        })
    }
}

/// What the supervised process is: an instance's container (cleaned up and recorded at its exit) or one
/// exec'd process (its exit is only reported to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Instance,
    Exec,
}

pub struct Supervisor {
    role: Role,
    args: RunArgs,
    init: i32,
    output: Output,
    stdin: Option<File>,
    listener: Option<UnixListener>,
    clients: Vec<Client>,
    /// The instance's log (none for exec: its output goes only to its client).
    log: Option<LogWriter>,
    signals: SignalFd,
    /// One read buffer for everything, on the heap: a supervisor's stack stays a few pages.
    buf: Vec<u8>,
}

impl Supervisor {
    pub fn start(args: &RunArgs) -> Result<Supervisor, SupervisorError> {
        let log = LogWriter::open(&args.log, args.log_max_size, args.log_max_files).map_err(|source| {
            SupervisorError::Io {
                action: "open the log",
                path: args.log.clone(),
                source,
            }
        })?;
        let signals = super::reaper_signals()?;

        let (output, stdin, init) = match &args.vmm_command {
            Some(command) => super::vm::spawn_vmm(args, command)?,
            None => create_container(args)?,
        };
        let _ = std::fs::remove_file(&args.socket);
        let listener = match UnixListener::bind(&args.socket) {
            Ok(l) => l,
            Err(source) => {
                abandon(args, init);
                return Err(SupervisorError::Io {
                    action: "listen on",
                    path: args.socket.clone(),
                    source,
                });
            }
        };
        let _ = listener.set_nonblocking(true);
        // Set-up (the bundle's config, the runtime's work) grew the heap; give the freed part back, as this
        // process lives as long as its container.
        // SAFETY: malloc_trim only returns free memory to the kernel.
        unsafe { libc::malloc_trim(0) };
        Ok(Supervisor {
            role: Role::Instance,
            args: args.clone(),
            init,
            output,
            stdin,
            listener: Some(listener),
            clients: Vec::new(),
            log: Some(log),
            signals,
            buf: vec![0u8; READ_BUF],
        })
    }

    /// For exec: a process already started (`pid`, our child or, as we are its subreaper, grandchild) whose
    /// streams are `output` and `stdin`, relayed as frames on our own stdin and stdout.
    pub(super) fn for_exec(
        pid: i32,
        output: Output,
        stdin: Option<File>,
        signals: SignalFd,
        args: RunArgs,
    ) -> Result<Supervisor, SupervisorError> {
        let dup = |fd: i32| {
            nix::unistd::dup(fd)
                .map_err(os("duplicate our stdio"))
                // SAFETY: dup returned a new descriptor that nothing else owns.
                .map(|n| File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) }))
        };
        Ok(Supervisor {
            role: Role::Exec,
            args,
            init: pid,
            output,
            stdin,
            listener: None,
            clients: vec![Client {
                reader: dup(0)?,
                writer: dup(1)?,
                decoder: Decoder::default(),
            }],
            log: None,
            signals,
            buf: vec![0u8; READ_BUF],
        })
    }

    pub fn init_pid(&self) -> i32 {
        self.init
    }

    /// Replace this process by `vessel-supervisor serve`, handing over our descriptors by number (they stay
    /// open across execve; the blocked SIGCHLD and any pending one stay too). Returns self only when the
    /// execve failed.
    pub fn exec_serve(self) -> Supervisor {
        let fd = |f: Option<&File>| f.map_or(-1, |f| f.as_raw_fd());
        let (out, err, master) = match &self.output {
            Output::Pipes { out, err } => (fd(out.as_ref()), fd(err.as_ref()), -1),
            Output::Terminal { master } => (-1, -1, fd(master.as_ref())),
            Output::Agent { conn, .. } => (fd(conn.as_ref()), -1, -1),
        };
        let fds = [
            out,
            err,
            master,
            fd(self.stdin.as_ref()),
            self.listener.as_ref().map_or(-1, |l| l.as_raw_fd()),
        ];
        for n in fds.iter().filter(|n| **n >= 0) {
            let _ = nix::fcntl::fcntl(*n, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()));
        }
        let agent_pending = match &self.output {
            Output::Agent { decoder, .. } => decoder.pending().to_vec(),
            _ => Vec::new(),
        };
        let serve = super::ServeArgs {
            run: self.args.clone(),
            init: self.init,
            fds,
            agent_pending,
        };
        let cargs: Vec<std::ffi::CString> = [
            "vessel-supervisor".to_string(),
            "serve".into(),
            serde_json::to_string(&serve).unwrap_or_default(),
        ]
        .into_iter()
        .filter_map(|s| std::ffi::CString::new(s).ok())
        .collect();
        // nix's execv, not std's Command: that one would reset the signal mask and lose a pending SIGCHLD.
        let _ = nix::unistd::execv(c"/proc/self/exe", &cargs);
        for n in fds.iter().filter(|n| **n >= 0) {
            let _ = nix::fcntl::fcntl(*n, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        }
        self
    }

    /// The supervisor `exec_serve` handed over.
    pub fn from_fds(a: &super::ServeArgs) -> Result<Supervisor, SupervisorError> {
        let args = a.run.clone();
        let take = |n: i32| -> Option<File> {
            // SAFETY: the descriptors were handed to us by number across execve; nothing else owns them.
            (n >= 0).then(|| unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(n) })
        };
        for n in a.fds.iter().filter(|n| **n >= 0) {
            let _ = nix::fcntl::fcntl(*n, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        }
        let output = if args.agent_plan.is_some() {
            let mut decoder = Decoder::default();
            decoder.push(&a.agent_pending);
            Output::Agent {
                conn: take(a.fds[0]),
                decoder,
                exit: None,
            }
        } else if args.tty {
            Output::Terminal {
                master: take(a.fds[2]),
            }
        } else {
            Output::Pipes {
                out: take(a.fds[0]),
                err: take(a.fds[1]),
            }
        };
        let stdin = take(a.fds[3]);
        let listener = take(a.fds[4]).map(|f| UnixListener::from(OwnedFd::from(f)));
        let signals = super::reaper_signals()?;
        let log = LogWriter::open(&args.log, args.log_max_size, args.log_max_files).map_err(|source| {
            SupervisorError::Io {
                action: "open the log",
                path: args.log.clone(),
                source,
            }
        })?;
        // What parsing our arguments left free goes back to the kernel before the long wait.
        // SAFETY: malloc_trim only returns free memory to the kernel.
        unsafe { libc::malloc_trim(0) };
        Ok(Supervisor {
            role: Role::Instance,
            init: a.init,
            args,
            output,
            stdin,
            listener,
            clients: Vec::new(),
            log: Some(log),
            signals,
            buf: vec![0u8; READ_BUF],
        })
    }

    /// Serve until the container exits; returns our exit status.
    pub fn serve(mut self) -> i32 {
        // The init may have exited before we were watching (across the execve): reap first.
        let exit_code = match self.reap() {
            Some(code) => code,
            None => loop {
                if let Some(code) = self.poll_once(PollTimeout::NONE) {
                    break code;
                }
            },
        };
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.output_open() && Instant::now() < deadline {
            self.poll_once(PollTimeout::from(50u16));
        }
        // A VM's status is its main process's, as its agent told it; without that (the VMM or the guest
        // died first), the VMM's.
        let exit_code = match &self.output {
            Output::Agent { exit: Some(code), .. } => *code,
            _ => exit_code,
        };
        if let Some(log) = self.log.as_mut() {
            log.flush_partial();
        }
        if self.role == Role::Exec {
            let exit = frames::encode_exit(exit_code);
            for c in &mut self.clients {
                let _ = c.writer.write_all(&exit);
            }
            return 0;
        }
        let oom_killed = self.oom_kills() > 0;
        if self.args.vmm_command.is_none() {
            let rt = Runtime::new(self.args.runtime_root.clone(), false);
            if let Err(e) = container::delete(&rt, &self.args.id, true) {
                eprintln!(
                    "vessel-supervisor: {}: {}",
                    self.args.id,
                    vessel_runtime::logging::one_line(&e)
                );
            }
        }
        let record = ExitRecord {
            exit_code,
            finished_at: vessel_runtime::clock::now_rfc3339(),
            oom_killed,
        };
        if let Err(e) = write_atomic(
            &self.args.exit_file,
            &serde_json::to_vec(&record).unwrap_or_default(),
        ) {
            eprintln!("vessel-supervisor: {}: {e}", self.args.exit_file.display());
        }
        let exit = frames::encode_exit(exit_code);
        for c in &mut self.clients {
            let _ = c.writer.write_all(&exit);
        }
        let _ = std::fs::remove_file(&self.args.socket);
        0
    }

    fn output_open(&self) -> bool {
        match &self.output {
            Output::Pipes { out, err } => out.is_some() || err.is_some(),
            Output::Terminal { master } => master.is_some(),
            Output::Agent { conn, .. } => conn.is_some(),
        }
    }

    /// One round of the loop; `Some(code)` once the init has exited.
    fn poll_once(&mut self, timeout: PollTimeout) -> Option<i32> {
        // Index layout: 0 signals, 1 listener, 2 and 3 output (absent ones polled for nothing), then clients.
        let none = PollFlags::empty();
        let input = PollFlags::POLLIN;
        let (a, b) = match &self.output {
            Output::Pipes { out, err } => (out.as_ref(), err.as_ref()),
            Output::Terminal { master } => (master.as_ref(), None),
            Output::Agent { conn, .. } => (conn.as_ref(), None),
        };
        let sig_fd = self.signals.as_fd();
        let listener = self.listener.as_ref();
        let mut fds = vec![
            PollFd::new(sig_fd, input),
            PollFd::new(
                listener.map_or(sig_fd, |l| l.as_fd()),
                if listener.is_some() { input } else { none },
            ),
            PollFd::new(
                a.map_or(sig_fd, |f| f.as_fd()),
                if a.is_some() { input } else { none },
            ),
            PollFd::new(
                b.map_or(sig_fd, |f| f.as_fd()),
                if b.is_some() { input } else { none },
            ),
        ];
        for c in &self.clients {
            fds.push(PollFd::new(c.reader.as_fd(), input));
        }
        match poll(&mut fds, timeout) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        // Clients' frames first, while their indexes still match `ready`.
        for i in (0..self.clients.len()).rev() {
            if ready[4 + i] && !self.read_client(i) {
                self.clients.remove(i);
            }
        }
        // Then new clients: one that connected before the container started must get all its output.
        if ready[1] {
            while let Some(Ok((stream, _))) = self.listener.as_ref().map(|l| l.accept()) {
                self.clients.extend(Client::from_stream(stream));
            }
        }
        if ready[2] {
            self.read_output(false);
        }
        if ready[3] {
            self.read_output(true);
        }
        if ready[0] {
            while let Ok(Some(_)) = self.signals.read_signal() {}
            return self.reap();
        }
        None
    }

    fn reap(&mut self) -> Option<i32> {
        let mut code = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, c)) if pid.as_raw() == self.init => code = Some(c),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == self.init => {
                    code = Some(128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return code,
                Ok(_) => {}
            }
        }
    }

    fn read_output(&mut self, second: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        self.read_output_into(second, &mut buf);
        self.buf = buf;
    }

    fn read_output_into(&mut self, second: bool, buf: &mut [u8]) {
        if let Output::Agent { .. } = self.output {
            return self.read_agent(buf);
        }
        let (file, stderr) = match &mut self.output {
            Output::Pipes { out, err } => {
                if second {
                    (err, true)
                } else {
                    (out, false)
                }
            }
            Output::Terminal { master } => (master, false),
            Output::Agent { .. } => return,
        };
        let Some(f) = file.as_mut() else { return };
        match f.read(buf) {
            // EIO on a terminal: every slave end is closed.
            Ok(0) | Err(_) => *file = None,
            Ok(n) => {
                if let Some(log) = self.log.as_mut() {
                    log.write(stderr, &buf[..n]);
                }
                let kind = if stderr {
                    FrameKind::Stderr
                } else {
                    FrameKind::Stdout
                };
                let frame = frames::encode(kind, &buf[..n]);
                self.clients.retain_mut(|c| c.writer.write_all(&frame).is_ok());
            }
        }
    }

    /// The agent's session: output frames to the log and the clients as they are; its exit frame ends the
    /// session (closing it lets the guest power off at once).
    fn read_agent(&mut self, buf: &mut [u8]) {
        let Output::Agent { conn, decoder, exit } = &mut self.output else {
            return;
        };
        let Some(f) = conn.as_mut() else { return };
        match f.read(buf) {
            Ok(0) | Err(_) => {
                *conn = None;
                return;
            }
            Ok(n) => decoder.push(&buf[..n]),
        }
        loop {
            let (kind, payload) = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                // A broken guest: its session ends, the instance's exit is the VMM's.
                Err(e) => {
                    eprintln!("vessel-supervisor: {}: guest agent: {e}", self.args.id);
                    *conn = None;
                    self.stdin = None;
                    return;
                }
            };
            match kind {
                FrameKind::Stdout | FrameKind::Stderr => {
                    if let Some(log) = self.log.as_mut() {
                        log.write(kind == FrameKind::Stderr, &payload);
                    }
                    let frame = frames::encode(kind, &payload);
                    self.clients.retain_mut(|c| c.writer.write_all(&frame).is_ok());
                }
                FrameKind::Exit => {
                    *exit = frames::decode_exit(&payload);
                    *conn = None;
                    self.stdin = None;
                    return;
                }
                _ => {}
            }
        }
    }

    /// Frames from a client; false when it is gone.
    fn read_client(&mut self, i: usize) -> bool {
        let n = match self.clients[i].reader.read(&mut self.buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let Supervisor { clients, buf, .. } = self;
        clients[i].decoder.push(&buf[..n]);
        loop {
            match self.clients[i].decoder.next_frame() {
                Ok(Some((FrameKind::Control, data))) if self.is_start_main(&data) => self.start_main(i),
                // A guest's session takes the client's frames as they are.
                Ok(Some((
                    kind @ (FrameKind::Stdin | FrameKind::StdinEof | FrameKind::Resize | FrameKind::Control),
                    data,
                ))) if matches!(self.output, Output::Agent { .. }) => {
                    if let Some(s) = self.stdin.as_mut() {
                        if s.write_all(&frames::encode(kind, &data)).is_err() {
                            self.stdin = None;
                        }
                    }
                }
                Ok(Some((FrameKind::Stdin, data))) => {
                    if let Some(s) = self.stdin.as_mut() {
                        if s.write_all(&data).is_err() {
                            self.stdin = None;
                        }
                    }
                }
                Ok(Some((FrameKind::StdinEof, _))) => match &self.output {
                    // End of input on a terminal is ^D in canonical mode.
                    Output::Terminal { .. } => {
                        if let Some(s) = self.stdin.as_mut() {
                            let _ = s.write_all(&[4]);
                        }
                    }
                    Output::Pipes { .. } | Output::Agent { .. } => self.stdin = None,
                },
                Ok(Some((FrameKind::Resize, data))) => {
                    if let (Some((rows, cols)), Output::Terminal { master: Some(m) }) =
                        (frames::decode_resize(&data), &self.output)
                    {
                        terminal::set_size(m.as_raw_fd(), rows, cols);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    fn is_start_main(&self, data: &[u8]) -> bool {
        matches!(self.output, Output::Agent { .. })
            && matches!(
                serde_json::from_slice::<super::vm::SupervisorRequest>(data),
                Ok(super::vm::SupervisorRequest::StartMain)
            )
    }

    /// vesseld booted the VM: reach its agent, start the main process, answer client `i`.
    fn start_main(&mut self, i: usize) {
        let started = match (&self.output, &self.args.agent_plan) {
            (Output::Agent { conn: None, .. }, Some(plan)) => super::vm::start_main_process(plan),
            _ => Err(SupervisorError::Agent(
                "the main process has started already".into(),
            )),
        };
        let reply = match started {
            Ok((pid, output, stdin)) => {
                self.output = output;
                self.stdin = stdin;
                super::vm::SupervisorReply::Started { pid }
            }
            Err(e) => super::vm::SupervisorReply::Failed {
                message: e.to_string(),
            },
        };
        let frame = frames::encode(
            FrameKind::Control,
            &serde_json::to_vec(&reply).unwrap_or_default(),
        );
        let _ = self.clients[i].writer.write_all(&frame);
    }

    /// OOM kills in the container's memory cgroup (v1 memory.oom_control, v2 memory.events), read before the
    /// cgroup is removed.
    fn oom_kills(&self) -> u64 {
        let config = std::fs::read(self.args.bundle.join("config.json")).unwrap_or_default();
        let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&config) else {
            return 0;
        };
        let Some(path) = spec["linux"]["cgroupsPath"].as_str() else {
            return 0;
        };
        let path = path.trim_start_matches('/');
        let read_key = |file: String, key: &str| {
            std::fs::read_to_string(file).ok().and_then(|t| {
                t.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
                })
            })
        };
        read_key(
            format!("/sys/fs/cgroup/memory/{path}/memory.oom_control"),
            "oom_kill",
        )
        .or_else(|| read_key(format!("/sys/fs/cgroup/{path}/memory.events"), "oom_kill"))
        .unwrap_or(0)
    }
}

/// Creates the container of `args` with its stdio on pipes (or a terminal with `args.tty`); returns our end
/// of its output, of its input (when it takes input) and its init's pid.
fn create_container(args: &RunArgs) -> Result<(Output, Option<File>, i32), SupervisorError> {
    let rt = Runtime::new(args.runtime_root.clone(), false);
    let mut opts = CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        ..Default::default()
    };
    let (output, stdin, record) = if args.tty {
        let console = terminal::ConsoleListener::bind(&args.socket)?;
        opts.console_socket = Some(console.path.clone());
        let record = container::create(&rt, &opts)?;
        let master = match console.receive() {
            Ok(m) => m,
            Err(e) => {
                let _ = container::delete(&rt, &args.id, true);
                return Err(e);
            }
        };
        if let Some((rows, cols)) = terminal::requested_size(args.tty_size.as_deref()) {
            terminal::set_size(master.as_raw_fd(), rows, cols);
        }
        let stdin = master.try_clone().ok();
        (Output::Terminal { master: Some(master) }, stdin, record)
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (in_r, in_w): (OwnedFd, Option<OwnedFd>) = if args.stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null = File::open("/dev/null").map_err(|source| SupervisorError::Io {
                action: "open",
                path: "/dev/null".into(),
                source,
            })?;
            (null.into(), None)
        };
        let record = with_stdio([&in_r, &out_w, &err_w], || container::create(&rt, &opts))??;
        (
            Output::Pipes {
                out: Some(File::from(out_r)),
                err: Some(File::from(err_r)),
            },
            in_w.map(File::from),
            record,
        )
    };
    Ok((output, stdin, record.pid))
}

/// Undoes a start that cannot be served: the container deleted, or the VMM killed and reaped.
pub(super) fn abandon(args: &RunArgs, init: i32) {
    if args.vmm_command.is_some() {
        let pid = Pid::from_raw(init);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
    } else {
        let rt = Runtime::new(args.runtime_root.clone(), false);
        let _ = container::delete(&rt, &args.id, true);
    }
}

/// Run `f` with fds 0, 1 and 2 replaced by `stdio` (the container's init inherits them), then put ours back.
pub(super) fn with_stdio<T>(stdio: [&OwnedFd; 3], f: impl FnOnce() -> T) -> Result<T, SupervisorError> {
    let saved: Vec<OwnedFd> = (0..3)
        .map(|fd| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
                .map_err(os("save our stdio"))
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
                .map(|n| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) })
        })
        .collect::<Result<_, _>>()?;
    for (target, fd) in stdio.iter().enumerate() {
        nix::unistd::dup2(fd.as_raw_fd(), target as i32).map_err(os("set the container's stdio"))?;
    }
    let out = f();
    for (target, fd) in saved.iter().enumerate() {
        let _ = nix::unistd::dup2(fd.as_raw_fd(), target as i32);
    }
    Ok(out)
}

pub fn write_atomic(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
