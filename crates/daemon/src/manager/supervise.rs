//! Starting a supervisor and recognising one later: its handshake, and its identity as pid + start time.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use vessel_api::Instance;

use super::{Manager, ManagerError};
use crate::store::SupervisorRef;
use crate::supervisor::Ready;

impl Manager {
    /// Run `vessel-supervisor run` for the instance and wait for its handshake: the container is then created
    /// (its init waits for start) and the supervisor serves its attach socket.
    pub(super) fn spawn_supervisor(&self, inst: &Instance) -> Result<(SupervisorRef, i32), ManagerError> {
        let cfg = &self.cfg;
        let dir = cfg.instance_dir(&inst.id);
        std::fs::create_dir_all(cfg.supervisors_dir()).map_err(|e| {
            ManagerError::Internal(format!("Cannot create {}: {e}", cfg.supervisors_dir().display()))
        })?;
        let _ = std::fs::remove_file(cfg.exit_file(&inst.id));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("supervisor.log"))
            .map_err(|e| {
                ManagerError::Internal(format!(
                    "Cannot open {}: {e}",
                    dir.join("supervisor.log").display()
                ))
            })?;
        let mut cmd = Command::new(&cfg.supervisor);
        cmd.arg("run")
            .arg("--id")
            .arg(&inst.id)
            .arg("--bundle")
            .arg(&dir)
            .arg("--runtime-root")
            .arg(cfg.runtime_root())
            .arg("--socket")
            .arg(cfg.attach_socket(&inst.id))
            .arg("--pid-file")
            .arg(cfg.supervisor_pid_file(&inst.id))
            .arg("--exit-file")
            .arg(cfg.exit_file(&inst.id))
            .arg("--log")
            .arg(cfg.log_file(&inst.id))
            .arg("--log-max-size")
            .arg(cfg.log_max_size.to_string())
            .arg("--log-max-files")
            .arg(cfg.log_max_files.to_string());
        if inst.config.tty {
            cmd.arg("--tty");
            let size = self
                .live(&inst.id)
                .pending_size
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some((rows, cols)) = size {
                cmd.arg("--tty-size").arg(format!("{rows}x{cols}"));
            }
        }
        if inst.config.stdin {
            cmd.arg("--stdin");
        }
        if super::vm::is_vm(inst) {
            cmd.arg("--vmm-command")
                .arg(cfg.instance_dir(&inst.id).join("vmm.json"));
        }
        if super::vm::has_agent(inst) {
            cmd.arg("--agent-plan").arg(self.agent_plan_file(&inst.id));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        // SAFETY: the closure only resets the signal mask and dispositions with async-signal-safe calls.
        unsafe {
            cmd.pre_exec(|| {
                // Our tokio threads block nothing, but a supervisor must start with a clean mask.
                let empty = nix::sys::signal::SigSet::empty();
                let _ = nix::sys::signal::pthread_sigmask(
                    nix::sys::signal::SigmaskHow::SIG_SETMASK,
                    Some(&empty),
                    None,
                );
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            ManagerError::Internal(format!(
                "Cannot run the supervisor {}: {e}",
                cfg.supervisor.display()
            ))
        })?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            use std::io::BufRead;
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let _ = child.wait();
        let ready: Ready = serde_json::from_str(line.trim()).map_err(|_| {
            ManagerError::Internal(format!(
                "The supervisor of {} did not start (see {})",
                inst.name,
                dir.join("supervisor.log").display()
            ))
        })?;
        if let Some(e) = ready.error {
            return Err(ManagerError::Invalid(format!("Cannot start {}: {e}", inst.name)));
        }
        let (Some(pid), Some(init)) = (ready.pid, ready.init) else {
            return Err(ManagerError::Internal(
                "The supervisor's handshake names no pid".into(),
            ));
        };
        let start_time = vessel_runtime::state::live_start_time(pid).unwrap_or(0);
        Ok((SupervisorRef { pid, start_time }, init))
    }
}

impl Manager {
    /// A supervisor of `id` that no record names (vesseld died between starting it and recording it): killed,
    /// and waited for, so that it cannot clean up a later container of the same instance.
    pub(super) fn kill_unrecorded_supervisor(&self, id: &str) {
        let pid_file = self.cfg.supervisor_pid_file(id);
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            return;
        };
        let ours = || {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let text = String::from_utf8_lossy(&c);
                    text.contains("vessel-supervisor") && text.contains(id)
                })
                .unwrap_or(false)
        };
        if ours() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            for _ in 0..200 {
                // Gone, or a zombie of someone else's: either way it runs no more code.
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                if state.is_empty() || state.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_file(pid_file);
    }
}

/// Whether the recorded supervisor is still that process (not a recycled pid).
pub fn supervisor_alive(s: &SupervisorRef) -> bool {
    vessel_runtime::state::live_start_time(s.pid) == Some(s.start_time)
}
