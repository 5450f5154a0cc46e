//! `vessel-supervisor`: one small synchronous process per running instance, as conmon is for podman and
//! containerd-shim for containerd. It creates the container with its stdio on pipes (or a terminal) that it
//! owns, writes the container's output to the instance's log, relays it to attached clients, reaps the
//! container, records its exit status, and cleans the container up. It outlives vesseld: vesseld watches it
//! through a pidfd and re-attaches after a restart.
//!
//! Start-up: vesseld runs `vessel-supervisor run ...` with stdout on a pipe; the process forks, the parent
//! exits at once (so vesseld never has to reap the long-lived one), and the child, in its own session,
//! creates the container and writes one JSON line to that pipe: `{"pid": SUPERVISOR, "init": PID}` or
//! `{"error": "..."}`. Then it serves its socket until the container exits.

mod exec;
mod io_loop;
pub use io_loop::write_atomic;
pub mod logfile;
mod terminal;
pub mod vm;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "vessel-supervisor",
    about = "vessel's per-instance supervisor (started by vesseld)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the container of a bundle and supervise it until it exits.
    Run(RunArgs),
    /// Run a process in a running container with stdio on our own (vesseld relays it).
    Exec(exec::ExecArgs),
}

/// `vessel-supervisor serve JSON` (internal, not through clap): the long-lived part of `run`, in a freshly
/// exec'd process that holds the container's streams by descriptor number, so that none of the set-up's
/// memory (parsing, the runtime's work) stays with it for the container's life.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeArgs {
    pub run: RunArgs,
    /// The container's init.
    pub init: i32,
    /// Descriptors: stdout (or the agent's connection), stderr, terminal master, stdin writer, attach
    /// listener (-1: none).
    pub fds: [i32; 5],
    /// Bytes of the agent's session read before the hand-over and not yet decoded.
    #[serde(default)]
    pub agent_pending: Vec<u8>,
}

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct RunArgs {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub bundle: PathBuf,
    #[arg(long = "runtime-root")]
    pub runtime_root: PathBuf,
    /// Where clients attach.
    #[arg(long)]
    pub socket: PathBuf,
    /// Holds our pid from our first moment to our exit, so a vesseld that died before it recorded us can
    /// still find us.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Written atomically when the container has exited and been cleaned up.
    #[arg(long = "exit-file")]
    pub exit_file: PathBuf,
    #[arg(long)]
    pub log: PathBuf,
    #[arg(long = "log-max-size", default_value_t = 10 << 20)]
    pub log_max_size: u64,
    #[arg(long = "log-max-files", default_value_t = 3)]
    pub log_max_files: u32,
    #[arg(long)]
    pub tty: bool,
    /// The terminal's first size, ROWSxCOLS, set before the container's process starts.
    #[arg(long = "tty-size")]
    pub tty_size: Option<String>,
    /// Keep the container's stdin open for attached clients.
    #[arg(long)]
    pub stdin: bool,
    /// A VM instance: the VMM's command line (a JSON array, program first) is in this file. The VMM is
    /// then the supervised process and its serial console the instance's stdio.
    #[arg(long = "vmm-command")]
    #[serde(default)]
    pub vmm_command: Option<PathBuf>,
    /// A VM made from an image: how to reach its guest agent and what to run there (JSON, `vm::AgentPlan`).
    /// The instance's stdio is then the agent's session; the VM's console goes to a file.
    #[arg(long = "agent-plan", requires = "vmm_command")]
    #[serde(default)]
    pub agent_plan: Option<PathBuf>,
}

/// What the supervisor writes to `--exit-file`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    /// 128 + N for a signal N.
    pub exit_code: i32,
    pub finished_at: String,
    #[serde(default)]
    pub oom_killed: bool,
}

/// The one line of the start-up handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("Invalid process to exec: {0}")]
    BadProcess(String),
    /// The VM's guest agent (its boot, handshake or main process) failed.
    #[error("{0}")]
    Agent(String),
    #[error(transparent)]
    Container(#[from] vessel_runtime::container::ContainerError),
    #[error("Cannot {action}: {source}")]
    Os {
        action: &'static str,
        source: nix::Error,
    },
    #[error("Cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn os(action: &'static str) -> impl FnOnce(nix::Error) -> SupervisorError {
    move |source| SupervisorError::Os { action, source }
}

/// The binary's entry point; returns its exit status.
pub fn main() -> i32 {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() == 3 && argv[1] == "serve" {
        return serve(&argv[2]);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Run(a) => run(a),
        Command::Exec(a) => exec::run(a),
    }
}

fn serve(json: &std::ffi::OsStr) -> i32 {
    let a: ServeArgs = match serde_json::from_slice(std::os::unix::ffi::OsStrExt::as_bytes(json)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vessel-supervisor: invalid serve arguments: {e}");
            return 2;
        }
    };
    let code = match io_loop::Supervisor::from_fds(&a) {
        Ok(sup) => sup.serve(),
        Err(e) => {
            eprintln!("vessel-supervisor: {}", vessel_runtime::logging::one_line(&e));
            1
        }
    };
    if let Some(p) = &a.run.pid_file {
        let _ = std::fs::remove_file(p);
    }
    code
}

fn run(args: RunArgs) -> i32 {
    // SAFETY: fork in a process that has started no thread; the child continues on a copy of this one.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            report(&Ready {
                pid: None,
                init: None,
                error: Some(format!("Cannot fork the supervisor: {e}")),
            });
            1
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => 0,
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::unistd::setsid();
            if let Some(p) = &args.pid_file {
                let _ = std::fs::write(p, std::process::id().to_string());
            }
            let code = supervise(&args);
            if let Some(p) = &args.pid_file {
                let _ = std::fs::remove_file(p);
            }
            code
        }
    }
}

fn supervise(args: &RunArgs) -> i32 {
    match io_loop::Supervisor::start(args) {
        Ok(sup) => {
            let told = report(&Ready {
                pid: Some(std::process::id() as i32),
                init: Some(sup.init_pid()),
                error: None,
            });
            if !told {
                // vesseld died before it heard of us: nobody will start or record this instance.
                io_loop::abandon(args, sup.init_pid());
                let _ = std::fs::remove_file(&args.socket);
                return 1;
            }
            detach_stdio();
            // Continue in a fresh image of ourselves; only if that cannot be done, here.
            sup.exec_serve().serve()
        }
        Err(e) => {
            report(&Ready {
                pid: None,
                init: None,
                error: Some(vessel_runtime::logging::one_line(&e)),
            });
            1
        }
    }
}

/// Whether vesseld got the handshake (a write to a pipe nobody reads fails with EPIPE).
fn report(ready: &Ready) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(ready).unwrap_or_default()).is_ok() && out.flush().is_ok()
}

/// From now on we write nothing to the pipe vesseld reads our handshake on: it must see end-of-file.
fn detach_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// Become the reaper of our descendants (a container's init may be a grandchild, forked by an intermediate
/// process; the subreaper flag survives execve, set again anyway) and take SIGCHLD on a non-blocking
/// descriptor, blocked so that none is lost before the poll loop reads it.
fn reaper_signals() -> Result<SignalFd, SupervisorError> {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(os("block SIGCHLD"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(os("create a signalfd"))
}

/// A pipe with both ends close-on-exec (the container's end is dup'ed onto its stdio, which clears it).
fn pipe() -> Result<(OwnedFd, OwnedFd), SupervisorError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(os("create a pipe"))
}
