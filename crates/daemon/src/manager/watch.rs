//! Watching supervisors: a pidfd per supervisor tells us when it is gone; then the exit it recorded (or
//! none, when it was killed) goes to the store, the instance's leftovers are removed, and the restart policy
//! decides what happens next.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use vessel_api::{Instance, Status};

use super::supervise::supervisor_alive;
use super::{Manager, ManagerError};
use crate::store::SupervisorRef;
use crate::supervisor::ExitRecord;

/// The restart policy's first delay, doubled per restart up to [`MAX_BACKOFF`] (docker's numbers).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
const RESET_AFTER: Duration = Duration::from_secs(10);

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Until the process behind `sup` has exited (at once if it has).
async fn supervisor_gone(sup: SupervisorRef) {
    let Some(fd) = pidfd_open(sup.pid) else { return };
    // The pid may have been reused between our record and pidfd_open: check it is still our supervisor.
    if !supervisor_alive(&sup) {
        return;
    }
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same while registered.
    match unsafe { AsyncFd::register(fd) } {
        // A pidfd becomes readable when its process exits.
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while supervisor_alive(&sup) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Manager {
    pub(super) fn watch_supervisor(self: &Arc<Self>, id: String, sup: SupervisorRef) {
        let mgr = self.clone();
        tokio::spawn(async move {
            supervisor_gone(sup).await;
            if let Err(e) = mgr.on_exit(&id, false).await {
                eprintln!("vesseld: after the exit of {id}: {e}");
            }
        });
    }

    /// The instance's process is gone (its supervisor exited, or was found dead at start-up): record its exit
    /// and apply the restart policy. `at_boot` when found by reconciliation.
    pub(super) async fn on_exit(self: &Arc<Self>, id: &str, at_boot: bool) -> Result<(), ManagerError> {
        let exit: Option<ExitRecord> = std::fs::read(self.cfg.exit_file(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mgr = self.clone();
        let id2 = id.to_string();
        // A supervisor killed with SIGKILL leaves its container: remove it now.
        tokio::task::spawn_blocking(move || {
            mgr.kill_unrecorded_supervisor(&id2);
            let _ = vessel_runtime::container::delete(&mgr.runtime(), &id2, true);
            mgr.remove_cgroup(&id2);
            let _ = std::fs::remove_file(mgr.cfg.attach_socket(&id2));
            mgr.remove_vm_sockets(&id2);
            mgr.unmount(&id2);
        })
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))?;
        let r = self.update_state(id, |s, sup| {
            if s.status.is_active() {
                s.status = Status::Exited;
            }
            s.pid = None;
            s.exit_code = exit.as_ref().map(|e| e.exit_code);
            s.oom_killed = exit.as_ref().is_some_and(|e| e.oom_killed);
            s.finished_at = Some(
                exit.as_ref()
                    .map(|e| e.finished_at.clone())
                    .unwrap_or_else(vessel_runtime::clock::now_rfc3339),
            );
            *sup = None;
        })?;
        let live = self.live(id);
        if r.instance.state.oom_killed {
            self.emit("oom", &r.instance, None);
        }
        self.emit("died", &r.instance, r.instance.state.exit_code);
        live.notify_exit();
        if self.should_restart(&r.instance, at_boot) {
            let delay = {
                let mut step = live.backoff.lock().unwrap_or_else(|p| p.into_inner());
                if ran_for(&r.instance) >= Some(RESET_AFTER) {
                    *step = 0;
                }
                let d = FIRST_BACKOFF
                    .saturating_mul(1u32 << (*step).min(10))
                    .min(MAX_BACKOFF);
                *step += 1;
                d
            };
            let mgr = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = mgr.restart_by_policy(&id).await {
                    eprintln!("vesseld: restart of {id} by its policy failed: {e}");
                }
            });
        } else if r.instance.config.auto_remove && !at_boot {
            let _g = live.verb.lock().await;
            self.delete_now(id).await?;
        }
        Ok(())
    }

    fn should_restart(&self, inst: &Instance, at_boot: bool) -> bool {
        let s = &inst.state;
        let p = &inst.config.restart;
        match p.name.as_str() {
            "always" => !s.stopped_by_user,
            "unless-stopped" => !s.stopped_by_user,
            // After a host restart docker brings back only always / unless-stopped instances.
            "on-failure" => {
                !at_boot
                    && !s.stopped_by_user
                    && s.exit_code != Some(0)
                    && (p.max_retries == 0 || s.restart_count < p.max_retries)
            }
            _ => false,
        }
    }

    async fn restart_by_policy(self: &Arc<Self>, id: &str) -> Result<(), ManagerError> {
        let live = self.live(id);
        let _g = live.verb.lock().await;
        let r = match self.store.get(id) {
            Ok(r) => r,
            Err(crate::store::StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // Only if nobody started, stopped or deleted it meanwhile.
        if r.instance.state.status != Status::Exited
            || !self.should_restart(&r.instance, false) && !boot_policy(&r.instance)
        {
            return Ok(());
        }
        self.start_locked(&r.instance, true).await.map(|_| ())
    }
}

/// Policies that bring an instance back after a host restart.
fn boot_policy(inst: &Instance) -> bool {
    matches!(inst.config.restart.name.as_str(), "always" | "unless-stopped") && !inst.state.stopped_by_user
}

fn ran_for(inst: &Instance) -> Option<Duration> {
    let start = vessel_api::time::parse_rfc3339(inst.state.started_at.as_deref()?)?;
    let end = vessel_api::time::parse_rfc3339(inst.state.finished_at.as_deref()?)?;
    end.checked_sub(start)
}
