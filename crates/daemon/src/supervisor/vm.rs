//! A VM instance under its supervisor: the supervised process is the VMM (vessel-vmm), our child. A raw VM's
//! serial console is on our pipes or on a terminal we own; a VM made from an image has its console in a file
//! and its stdio is a session with its guest agent (the VM's main process, relayed as frames). Everything
//! else (log, attach, exit record) is what a container gets, so the verbs work on both kinds alike.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use vessel_agent::client::AgentClient;
use vessel_agent::proto::{GuestSetup, Process};

use super::io_loop::Output;
use super::{pipe, terminal, RunArgs, SupervisorError};

/// What the supervisor of a VM made from an image does once its VMM runs (written by vesseld).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentPlan {
    /// The VMM's vsock socket (host side).
    pub vsock: std::path::PathBuf,
    /// How long the guest may take to boot to its agent.
    pub boot_timeout_secs: u64,
    pub process: Process,
    pub setup: GuestSetup,
}

/// What vesseld asks of a VM's supervisor over its attach socket (a control frame), once the VM boots.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SupervisorRequest {
    /// Reach the guest agent and start the instance's main process there.
    StartMain,
}

/// The supervisor's answer to [`SupervisorRequest::StartMain`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SupervisorReply {
    Started { pid: i32 },
    Failed { message: String },
}

/// Reaches the agent of the booting VM and starts the main process there; the session's stream (and bytes
/// of it already read) become the instance's output, and a writer to it its input.
pub(super) fn start_main_process(plan_file: &Path) -> Result<(i32, Output, Option<File>), SupervisorError> {
    let bad = |e: String| SupervisorError::BadProcess(e);
    let text = std::fs::read(plan_file).map_err(|e| bad(format!("{}: {e}", plan_file.display())))?;
    let plan: AgentPlan =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{}: {e}", plan_file.display())))?;
    let boot = std::time::Duration::from_secs(plan.boot_timeout_secs);
    let agent_err = |e: vessel_agent::client::ClientError| SupervisorError::Agent(e.to_string());
    let mut client = AgentClient::connect_vsock(&plan.vsock, boot).map_err(agent_err)?;
    client.hello().map_err(agent_err)?;
    let pid = client
        .run(plan.process.clone(), true, Some(plan.setup.clone()))
        .map_err(agent_err)?;
    let (stream, decoder) = client.into_stream();
    // The session lives as long as the instance: no timeouts from here on.
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    let conn = File::from(OwnedFd::from(stream));
    let writer = conn.try_clone().ok();
    Ok((pid, Output::agent(conn, decoder), writer))
}

/// The VMM's command line as vesseld wrote it: a JSON array, program first.
fn read_command(path: &Path) -> Result<Vec<String>, SupervisorError> {
    let bad = |e: String| SupervisorError::BadProcess(format!("{}: {e}", path.display()));
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let argv: Vec<String> = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if argv.is_empty() {
        return Err(bad("no program".into()));
    }
    Ok(argv)
}

/// Starts the VMM of `args` with its console on pipes (or a terminal with `args.tty`); returns our end
/// of its output, of its input (when it takes input) and its pid.
pub(super) fn spawn_vmm(
    args: &RunArgs,
    command_file: &Path,
) -> Result<(Output, Option<File>, i32), SupervisorError> {
    let argv = read_command(command_file)?;
    let with_agent = args.agent_plan.is_some();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: prctl with integer arguments only, async-signal-safe. A supervisor that dies (even by
    // SIGKILL) takes its VM with it, as nothing would hold its console or record its end.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    let spawn_failed = |source: std::io::Error| SupervisorError::Io {
        action: "run the VMM",
        path: argv[0].clone().into(),
        source,
    };
    if with_agent {
        // The console is in a file; what the VMM itself says goes to our own log. The main process's
        // session begins when vesseld has booted the VM and asks for it (StartMain).
        cmd.stdin(Stdio::null());
        let child = cmd.spawn().map_err(spawn_failed)?;
        return Ok((Output::waiting_for_agent(), None, child.id() as i32));
    }
    if args.tty {
        let pty = nix::pty::openpty(None, None).map_err(super::os("open a terminal for the console"))?;
        if let Some((rows, cols)) = terminal::requested_size(args.tty_size.as_deref()) {
            terminal::set_size(pty.master.as_raw_fd(), rows, cols);
        }
        let slave = File::from(pty.slave);
        let io = |f: &File| f.try_clone().map(Stdio::from).map_err(spawn_failed);
        cmd.stdin(io(&slave)?).stdout(io(&slave)?).stderr(io(&slave)?);
        let child = cmd.spawn().map_err(spawn_failed)?;
        let master = File::from(pty.master);
        let stdin = master.try_clone().ok();
        return Ok((
            Output::Terminal { master: Some(master) },
            stdin,
            child.id() as i32,
        ));
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin, ours): (Stdio, Option<OwnedFd>) = if args.stdin {
        let (r, w) = pipe()?;
        (Stdio::from(r), Some(w))
    } else {
        (Stdio::null(), None)
    };
    cmd.stdin(stdin)
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    // std's Command resets the signal mask in the child: the VMM does not inherit our blocked SIGCHLD.
    let child = cmd.spawn().map_err(spawn_failed)?;
    Ok((
        Output::Pipes {
            out: Some(File::from(out_r)),
            err: Some(File::from(err_r)),
        },
        ours.map(File::from),
        child.id() as i32,
    ))
}
