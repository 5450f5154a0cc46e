//! `vessel-supervisor exec`: one process in a running container, its streams relayed as frames on our own
//! stdin and stdout (vesseld passes them on to the client), its exit code as the last frame. A process of
//! its own keeps the fork that exec needs out of vesseld's threads.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use vessel_api::frames::{self, FrameKind};
use vessel_runtime::container::{self, ExecOptions, Runtime};

use super::io_loop::{Output, Supervisor};
use super::{pipe, terminal, RunArgs, SupervisorError};

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    #[arg(long)]
    pub id: String,
    #[arg(long = "runtime-root")]
    pub runtime_root: PathBuf,
    /// The OCI process to run, as JSON.
    #[arg(long)]
    pub process: String,
}

pub fn run(args: ExecArgs) -> i32 {
    match start(&args) {
        Ok(sup) => sup.serve(),
        Err(e) => {
            let msg = vessel_runtime::logging::one_line(&e);
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&frames::encode(FrameKind::Error, msg.as_bytes()));
            let _ = out.flush();
            1
        }
    }
}

fn start(args: &ExecArgs) -> Result<Supervisor, SupervisorError> {
    let process: oci_spec::runtime::Process =
        serde_json::from_str(&args.process).map_err(|e| SupervisorError::BadProcess(e.to_string()))?;
    let signals = super::reaper_signals()?;
    let rt = Runtime::new(args.runtime_root.clone(), false);
    let scratch = std::env::temp_dir().join(format!("vessel-exec-{}", std::process::id()));
    let pid_file = scratch.with_extension("pid");
    let mut opts = ExecOptions {
        id: args.id.clone(),
        process: process.clone(),
        console_socket: None,
        pid_file: Some(pid_file.clone()),
        detach: true,
        preserve_fds: 0,
    };
    let (output, stdin) = if process.terminal().unwrap_or(false) {
        let console = terminal::ConsoleListener::bind(&scratch.with_extension("sock"))?;
        opts.console_socket = Some(console.path.clone());
        container::exec(&rt, &opts)?;
        let master = console.receive()?;
        let stdin = master.try_clone().ok();
        (Output::Terminal { master: Some(master) }, stdin)
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (in_r, in_w) = pipe()?;
        super::io_loop::with_stdio([&in_r, &out_w, &err_w], || container::exec(&rt, &opts))??;
        (
            Output::Pipes {
                out: Some(File::from(out_r)),
                err: Some(File::from(err_r)),
            },
            Some(File::from(in_w)),
        )
    };
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let _ = std::fs::remove_file(&pid_file);
    let pid = pid.ok_or(SupervisorError::Os {
        action: "learn the exec'd process's pid",
        source: nix::Error::ESRCH,
    })?;
    // Only the id and runtime root matter for an exec'd process: it has no log, socket or exit file.
    let run_args = RunArgs {
        id: args.id.clone(),
        bundle: PathBuf::new(),
        runtime_root: args.runtime_root.clone(),
        socket: PathBuf::new(),
        pid_file: None,
        exit_file: PathBuf::new(),
        log: PathBuf::new(),
        log_max_size: 0,
        log_max_files: 0,
        tty: false,
        tty_size: None,
        stdin: true,
        vmm_command: None,
        agent_plan: None,
    };
    Supervisor::for_exec(pid, output, stdin, signals, run_args)
}
