//! At start-up, before the API serves: make the host agree with the store. Half-made or half-deleted
//! instances are finished off; running ones whose supervisor lives are watched again; those whose supervisor
//! died get their exit recorded (and their restart policy applied, which brings instances back after a host
//! restart); what the host holds that no record names (containers, cgroups, mounts, directories, sockets)
//! is removed. Every repair is reported.

use std::collections::HashSet;
use std::sync::Arc;

use vessel_api::Status;

use super::supervise::supervisor_alive;
use super::{Manager, ManagerError};

/// What reconciliation found and did, one line each.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
}

impl Manager {
    pub async fn reconcile(self: &Arc<Self>) -> Result<Report, ManagerError> {
        let mut report = Report::default();
        // Networks first: an instance restarted below by its policy needs its bridge.
        self.restore_networks(&mut report.lines).await?;
        let records = self.store.list()?;
        let mut known = HashSet::new();
        for r in records {
            let inst = &r.instance;
            let id = inst.id.clone();
            match inst.state.status {
                Status::Creating | Status::Deleting => {
                    let mgr = self.clone();
                    let id2 = id.clone();
                    tokio::task::spawn_blocking(move || mgr.remove_files(&id2))
                        .await
                        .map_err(|e| ManagerError::Internal(e.to_string()))??;
                    self.store.delete(&id)?;
                    report.lines.push(format!(
                        "{}: removed (it was being {} when vesseld stopped)",
                        inst.name,
                        if inst.state.status == Status::Creating {
                            "created"
                        } else {
                            "deleted"
                        }
                    ));
                    continue;
                }
                Status::Running | Status::Paused | Status::Starting => {
                    let live_supervisor = r.supervisor.filter(supervisor_alive);
                    if let (Some(sup), false) = (live_supervisor, inst.state.status == Status::Starting) {
                        self.watch_supervisor(id.clone(), sup);
                        known.insert(id);
                        continue;
                    }
                    if let Some(sup) = live_supervisor {
                        // A start that never finished: its container was created but not started. Its
                        // supervisor is killed and waited for, so the record is final before we serve.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(sup.pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        for _ in 0..500 {
                            if !supervisor_alive(&sup) {
                                break;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                        report
                            .lines
                            .push(format!("{}: its start was interrupted; stopped", inst.name));
                        self.on_exit(&id, true).await?;
                        known.insert(id);
                        continue;
                    }
                    report.lines.push(format!(
                        "{}: its supervisor is gone; recorded as exited{}",
                        inst.name,
                        if self.cfg.exit_file(&id).exists() {
                            ""
                        } else {
                            " with an unknown status"
                        }
                    ));
                    self.on_exit(&id, true).await?;
                    known.insert(id);
                }
                Status::Created | Status::Exited => {
                    // Nothing may run for it; its root stays unmounted until it starts.
                    let mgr = self.clone();
                    let id2 = id.clone();
                    let had_container = tokio::task::spawn_blocking(move || {
                        let had = vessel_runtime::container::state(&mgr.runtime(), &id2).is_ok();
                        let _ = vessel_runtime::container::delete(&mgr.runtime(), &id2, true);
                        mgr.remove_cgroup(&id2);
                        mgr.unmount(&id2);
                        had
                    })
                    .await
                    .map_err(|e| ManagerError::Internal(e.to_string()))?;
                    if had_container {
                        report.lines.push(format!(
                            "{}: removed a container it should not have had",
                            inst.name
                        ));
                    }
                    known.insert(id);
                }
            }
        }
        // Instances made before images were held (an older vesseld) get their hold now.
        if let Ok(store) = self.image_store() {
            for r in self.store.list()? {
                let holder = super::images::holder(&r.instance.id);
                if store.held(&holder).is_err() {
                    if let Ok(image) = store.find(&r.instance.image_id) {
                        if store.hold(&holder, &image).is_ok() {
                            report
                                .lines
                                .push(format!("{}: now holds its image", r.instance.name));
                        }
                    }
                }
            }
        }
        let mgr = self.clone();
        let orphans = tokio::task::spawn_blocking(move || mgr.remove_orphans(&known))
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))?;
        report.lines.extend(orphans);
        let mgr = self.clone();
        let plumbing = tokio::task::spawn_blocking(move || mgr.reconcile_plumbing())
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))??;
        report.lines.extend(plumbing);
        // Records removed above took their attachments with them.
        self.after_attachments_changed().await?;
        Ok(report)
    }

    /// Containers, instance directories, sockets and cgroups of ours that no record names.
    fn remove_orphans(&self, known: &HashSet<String>) -> Vec<String> {
        let mut lines = Vec::new();
        let rt = self.runtime();
        for id in vessel_runtime::state::list_ids(&rt.root).unwrap_or_default() {
            if !known.contains(&id) {
                let _ = vessel_runtime::container::delete(&rt, &id, true);
                lines.push(format!("{id}: removed a container no instance owns"));
            }
        }
        for id in dir_names(&self.cfg.instances_dir()) {
            if !known.contains(&id) {
                match self.remove_files(&id) {
                    Ok(()) => lines.push(format!("{id}: removed files no instance owns")),
                    Err(e) => lines.push(format!("{id}: cannot remove files no instance owns: {e}")),
                }
            }
        }
        for name in entries(&self.cfg.supervisors_dir(), |t| !t.is_dir()) {
            let short = name.split('.').next().unwrap_or("");
            if !known.iter().any(|id| crate::config::short_id(id) == short) {
                let _ = std::fs::remove_file(self.cfg.supervisors_dir().join(&name));
            }
        }
        if let Ok(store) = self.image_store() {
            for holder in store.holders().unwrap_or_default() {
                let Some(id) = holder.strip_prefix("instance/") else {
                    continue;
                };
                if !known.contains(id) && store.release(&holder).is_ok() {
                    lines.push(format!("{id}: released the image no instance holds any more"));
                }
            }
        }
        let parent = self.cfg.cgroup_parent();
        if let Ok(cg) =
            vessel_runtime::cgroups::Cgroup::resolve(Some(std::path::Path::new(&parent)), "parent", false)
        {
            let mut seen = HashSet::new();
            for d in cg.dirs() {
                for id in dir_names(&d.path) {
                    if !known.contains(&id) && seen.insert(id.clone()) {
                        self.remove_cgroup(&id);
                        lines.push(format!("{id}: removed a cgroup no instance owns"));
                    }
                }
            }
        }
        lines
    }
}

/// Names of the subdirectories of `dir` (none when it does not exist).
fn dir_names(dir: &std::path::Path) -> Vec<String> {
    entries(dir, |t| t.is_dir())
}

fn entries(dir: &std::path::Path, keep: impl Fn(&std::fs::FileType) -> bool) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| keep(&t)))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
