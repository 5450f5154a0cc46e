//! A VM instance under its supervisor: the supervised process is the VMM (vessel-vmm), our child, with
//! its serial console on our pipes or on a terminal we own. Everything else (log, attach, exit record) is
//! what a container gets, so the verbs that read them work on both kinds alike.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::io_loop::Output;
use super::{pipe, terminal, RunArgs, SupervisorError};

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
