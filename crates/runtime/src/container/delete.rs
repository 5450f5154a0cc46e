//! `delete`: remove a stopped (or, with force, any) container: its processes, cgroup and state, then the
//! poststop hooks.

use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::{ContainerError, Runtime};
use crate::hooks;
use crate::state::{ContainerRecord, StateError, Status};

pub fn delete(rt: &Runtime, id: &str, force: bool) -> Result<(), ContainerError> {
    let sd = match rt.open(id, true) {
        Ok(sd) => sd,
        Err(ContainerError::State(StateError::NotFound(_))) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let record = match sd.load() {
        Ok(r) => r,
        // A create that died before writing its record left only the directory: nothing else to undo.
        Err(StateError::Creating(_)) | Err(StateError::Corrupt { .. }) if force => return Ok(sd.remove()?),
        Err(e) => return Err(e.into()),
    };
    let status = record.status(&sd);
    match status {
        Status::Stopped => {}
        _ if force => {}
        _ => {
            return Err(ContainerError::WrongStatus {
                id: id.into(),
                status,
                action: "delete it without --force",
            })
        }
    }
    // Even a stopped container can leave processes in its cgroup when it had no pid namespace of its own.
    if status != Status::Stopped || !record.cgroup.pids().unwrap_or_default().is_empty() {
        kill_all(&record)?;
    }
    record.cgroup.destroy()?;
    sd.remove()?;
    if let Some(h) = record.spec.hooks() {
        let state = record.state_json(Status::Stopped).to_string();
        for hook in h.poststop().iter().flatten() {
            // The runtime-spec: a failing poststop hook is logged; deletion goes on.
            if let Err(e) = hooks::run("poststop", hook, &state) {
                crate::logging::warn(&e.to_string());
            }
        }
    }
    Ok(())
}

/// SIGKILL the init and everything in the cgroup, and wait until they are gone.
fn kill_all(record: &ContainerRecord) -> Result<(), ContainerError> {
    let _ = signal::kill(Pid::from_raw(record.pid), Signal::SIGKILL);
    for pid in record.cgroup.pids().unwrap_or_default() {
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // Frozen processes die only once thawed.
    if record.cgroup.is_frozen().unwrap_or(false) {
        record.cgroup.thaw()?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_micros(100);
    while record.init_alive() || !record.cgroup.pids().unwrap_or_default().is_empty() {
        if Instant::now() > deadline {
            return Err(ContainerError::Init(format!(
                "Container {}'s processes did not exit after SIGKILL",
                record.id
            )));
        }
        // Our own child when `run` created it: reap it so it does not linger as a zombie.
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(record.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    Ok(())
}
