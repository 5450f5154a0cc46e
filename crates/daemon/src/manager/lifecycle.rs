//! The state verbs of `PUT /1.0/instances/NAME/state`: start, stop, restart, kill, pause, resume.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use vessel_api::{Instance, Status};
use vessel_runtime::container;

use super::{vm, Manager, ManagerError};
use crate::store::Record;

/// How long `stop` waits after SIGKILL before it reports the instance as stuck.
const KILL_GRACE: Duration = Duration::from_secs(10);

fn blocking_err(e: tokio::task::JoinError) -> ManagerError {
    ManagerError::Internal(e.to_string())
}

impl Manager {
    pub async fn change_state(
        self: &Arc<Self>,
        name_or_id: &str,
        change: &vessel_api::StateChange,
    ) -> Result<Instance, ManagerError> {
        let id = self.find(name_or_id)?.instance.id;
        match change.action.as_str() {
            "start" => self.start(&id).await,
            "stop" => self.stop(&id, change.timeout, change.signal.as_deref()).await,
            "restart" => {
                self.stop(&id, change.timeout, None).await?;
                self.start(&id).await
            }
            "kill" => self.kill(&id, change.signal.as_deref()).await,
            "pause" => self.pause(&id, true).await,
            "resume" | "unpause" => self.pause(&id, false).await,
            other => Err(ManagerError::Invalid(format!(
                "Unknown action {other:?}: use start, stop, restart, kill, pause or resume"
            ))),
        }
    }

    pub async fn start(self: &Arc<Self>, id: &str) -> Result<Instance, ManagerError> {
        let live = self.live(id);
        let _g = live.verb.lock().await;
        let r = self.store.get(id)?;
        match r.instance.state.status {
            Status::Created | Status::Exited => {}
            s => {
                return Err(ManagerError::Conflict(format!(
                    "Instance {} is {s}: it cannot be started",
                    r.instance.name
                )))
            }
        }
        self.start_locked(&r.instance, false).await
    }

    /// Start with the verb lock held; `by_policy` when the restart policy does it.
    pub(super) async fn start_locked(
        self: &Arc<Self>,
        inst: &Instance,
        by_policy: bool,
    ) -> Result<Instance, ManagerError> {
        let before = inst.state.clone();
        self.update_state(&inst.id, |s, _| s.status = Status::Starting)?;
        let mgr = self.clone();
        let inst2 = inst.clone();
        let spawned = tokio::task::spawn_blocking(move || {
            mgr.prepare_files(&inst2)?;
            if vm::is_vm(&inst2) {
                mgr.plumb_taps(&inst2)?;
            } else {
                mgr.plumb(&inst2)?;
            }
            mgr.spawn_supervisor(&inst2)
        })
        .await
        .map_err(blocking_err)?;
        let (sup, init) = match spawned {
            Ok(v) => v,
            Err(e) => {
                self.fail_pending_attaches(&inst.id, &e.to_string());
                let mgr = self.clone();
                let id = inst.id.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    mgr.unmount(&id);
                    mgr.remove_vm_sockets(&id);
                })
                .await;
                self.update_state(&inst.id, |s, _| *s = before)?;
                return Err(e);
            }
        };
        self.update_state(&inst.id, |_, s| *s = Some(sup))?;
        self.connect_pending_attaches(&inst.id).await;
        let rt = self.runtime();
        let id = inst.id.clone();
        if vm::is_vm(inst) {
            // Its VMM waits on its API: boot it now that attached clients are connected.
            let mgr = self.clone();
            let inst2 = inst.clone();
            let booted = tokio::task::spawn_blocking(move || mgr.boot_vm(&inst2))
                .await
                .map_err(blocking_err)?;
            if let Err(e) = booted {
                // The VMM is killed; its supervisor sees it go and exits; the watcher records it.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), Signal::SIGKILL);
                self.watch_supervisor(inst.id.clone(), sup);
                return Err(e);
            }
        }
        let is_vm = vm::is_vm(inst);
        let started =
            tokio::task::spawn_blocking(move || if is_vm { Ok(()) } else { container::start(&rt, &id) })
                .await
                .map_err(blocking_err)?;
        if let Err(e) = started {
            // The supervisor sees its container go and exits; the watcher records it.
            let rt = self.runtime();
            let id = inst.id.clone();
            let _ = tokio::task::spawn_blocking(move || container::delete(&rt, &id, true)).await;
            self.watch_supervisor(inst.id.clone(), sup);
            return Err(ManagerError::Invalid(format!(
                "Cannot start {}: {}",
                inst.name,
                vessel_runtime::logging::one_line(&e)
            )));
        }
        let r = self.update_state(&inst.id, |s, _| {
            s.status = Status::Running;
            s.pid = Some(init);
            s.exit_code = None;
            s.oom_killed = false;
            s.started_at = Some(vessel_runtime::clock::now_rfc3339());
            s.finished_at = None;
            s.stopped_by_user = false;
            if by_policy {
                s.restart_count += 1;
            }
        })?;
        self.watch_supervisor(inst.id.clone(), sup);
        self.emit(if by_policy { "restarted" } else { "started" }, &r.instance, None);
        Ok(r.instance)
    }

    async fn stop(
        self: &Arc<Self>,
        id: &str,
        timeout: Option<u32>,
        signal: Option<&str>,
    ) -> Result<Instance, ManagerError> {
        let live = self.live(id);
        let _g = live.verb.lock().await;
        let r = self.update_state(id, |s, _| {
            if s.status.is_active() {
                s.stopped_by_user = true;
            }
        })?;
        if !r.instance.state.status.is_active() {
            // Stopping a stopped instance is not an error (docker's too); it stays as it is.
            return Ok(r.instance);
        }
        let first = match signal.or(r.instance.config.stop_signal.as_deref()) {
            Some(s) => container::parse_signal(s).map_err(|e| ManagerError::Invalid(e.to_string()))?,
            None => Signal::SIGTERM,
        };
        let grace = Duration::from_secs(timeout.or(r.instance.config.stop_timeout).unwrap_or(10).into());
        let mut exits = live.exit_watch();
        exits.borrow_and_update();
        self.signal(&r, first, false).await?;
        if r.instance.state.status == Status::Paused {
            self.thaw(&r).await;
        }
        if tokio::time::timeout(grace, self.until_exited(id, &mut exits))
            .await
            .is_err()
        {
            self.kill_and_wait(&r, KILL_GRACE).await?;
        }
        let r = self.store.get(id)?;
        self.emit("stopped", &r.instance, r.instance.state.exit_code);
        Ok(r.instance)
    }

    /// Until the store says the instance is not running.
    async fn until_exited(&self, id: &str, exits: &mut tokio::sync::watch::Receiver<u64>) {
        loop {
            match self.store.get(id) {
                Ok(r) if r.instance.state.status.is_active() => {}
                _ => return,
            }
            if exits.changed().await.is_err() {
                return;
            }
        }
    }

    /// SIGKILL to every process of the instance, then wait for its supervisor to record the exit.
    pub(super) async fn kill_and_wait(&self, r: &Record, grace: Duration) -> Result<(), ManagerError> {
        let live = self.live(&r.instance.id);
        let mut exits = live.exit_watch();
        exits.borrow_and_update();
        self.signal(r, Signal::SIGKILL, true).await?;
        if r.instance.state.status == Status::Paused {
            self.thaw(r).await;
        }
        tokio::time::timeout(grace, self.until_exited(&r.instance.id, &mut exits))
            .await
            .map_err(|_| {
                ManagerError::Internal(format!(
                    "Instance {} did not exit within {} s of SIGKILL",
                    r.instance.name,
                    grace.as_secs()
                ))
            })
    }

    async fn signal(&self, r: &Record, sig: Signal, all: bool) -> Result<(), ManagerError> {
        if vm::is_vm(&r.instance) {
            return self.signal_vm(&r.instance, sig);
        }
        let rt = self.runtime();
        let id = r.instance.id.clone();
        match tokio::task::spawn_blocking(move || container::kill(&rt, &id, sig, all))
            .await
            .map_err(blocking_err)?
        {
            Ok(()) => Ok(()),
            // It exited meanwhile: its supervisor records that.
            Err(container::ContainerError::WrongStatus { .. }) | Err(container::ContainerError::State(_)) => {
                Ok(())
            }
            Err(e) => Err(ManagerError::Internal(vessel_runtime::logging::one_line(&e))),
        }
    }

    async fn thaw(&self, r: &Record) {
        if vm::is_vm(&r.instance) {
            let _ = self.pause_vm(&r.instance, false);
            return;
        }
        let rt = self.runtime();
        let id = r.instance.id.clone();
        let _ = tokio::task::spawn_blocking(move || container::resume(&rt, &id)).await;
    }

    async fn kill(self: &Arc<Self>, id: &str, signal: Option<&str>) -> Result<Instance, ManagerError> {
        let sig = match signal {
            Some(s) => container::parse_signal(s).map_err(|e| ManagerError::Invalid(e.to_string()))?,
            None => Signal::SIGKILL,
        };
        let live = self.live(id);
        let _g = live.verb.lock().await;
        let r = self.store.get(id)?;
        if !r.instance.state.status.is_active() {
            return Err(ManagerError::Conflict(format!(
                "Instance {} is {}: there is nothing to kill",
                r.instance.name, r.instance.state.status
            )));
        }
        // docker: a killed container is not restarted by `unless-stopped` or `always` until started again.
        if matches!(sig, Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT) {
            self.update_state(id, |s, _| s.stopped_by_user = true)?;
        }
        self.signal(&r, sig, false).await?;
        Ok(self.store.get(id)?.instance)
    }

    async fn pause(self: &Arc<Self>, id: &str, freeze: bool) -> Result<Instance, ManagerError> {
        let live = self.live(id);
        let _g = live.verb.lock().await;
        let r = self.store.get(id)?;
        let (from, to, verb) = if freeze {
            (Status::Running, Status::Paused, "paused")
        } else {
            (Status::Paused, Status::Running, "resumed")
        };
        if r.instance.state.status != from {
            return Err(ManagerError::Conflict(format!(
                "Instance {} is {}: it must be {from} to be {verb}",
                r.instance.name, r.instance.state.status
            )));
        }
        if vm::is_vm(&r.instance) {
            self.pause_vm(&r.instance, freeze)?;
        } else {
            self.pause_container(id, freeze).await?;
        }
        let r = self.update_state(id, |s, _| {
            if s.status == from {
                s.status = to;
            }
        })?;
        self.emit(verb, &r.instance, None);
        Ok(r.instance)
    }

    async fn pause_container(&self, id: &str, freeze: bool) -> Result<(), ManagerError> {
        let rt = self.runtime();
        let id2 = id.to_string();
        tokio::task::spawn_blocking(move || {
            if freeze {
                container::pause(&rt, &id2)
            } else {
                container::resume(&rt, &id2)
            }
        })
        .await
        .map_err(blocking_err)?
        .map_err(|e| ManagerError::Conflict(vessel_runtime::logging::one_line(&e)))
    }
}
