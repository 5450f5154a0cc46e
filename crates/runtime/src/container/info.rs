//! Read-only views: `state`, `list`, `ps` and the statistics behind `events`.

use serde::Serialize;

use super::{ContainerError, Runtime};
use crate::state::{list_ids, StateDir, StateError, Status};

pub fn state(rt: &Runtime, id: &str) -> Result<serde_json::Value, ContainerError> {
    let sd = rt.open(id, false)?;
    match sd.load() {
        Ok(record) => Ok(record.state_json(record.status(&sd))),
        Err(StateError::Creating(_)) => Ok(serde_json::json!({
            "ociVersion": crate::spec::OCI_VERSION, "id": id, "status": Status::Creating.to_string(), "pid": 0, "bundle": ""
        })),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Serialize)]
pub struct ContainerSummary {
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: String,
    pub created: String,
    pub owner: String,
}

pub fn list(rt: &Runtime) -> Result<Vec<ContainerSummary>, ContainerError> {
    let mut out = Vec::new();
    for id in list_ids(&rt.root)? {
        let Ok(sd) = StateDir::open(&rt.root, &id) else {
            continue;
        };
        let Ok(record) = sd.load() else { continue };
        let status = record.status(&sd);
        out.push(ContainerSummary {
            pid: if status == Status::Stopped { 0 } else { record.pid },
            status: status.to_string(),
            bundle: record.bundle.display().to_string(),
            created: record.created.clone(),
            owner: record.owner.clone(),
            id,
        });
    }
    Ok(out)
}

pub fn ps_pids(rt: &Runtime, id: &str) -> Result<Vec<i32>, ContainerError> {
    let sd = rt.open(id, false)?;
    let record = sd.load()?;
    let mut pids = record.cgroup.pids()?;
    pids.sort_unstable();
    Ok(pids)
}

pub fn stats(rt: &Runtime, id: &str) -> Result<serde_json::Value, ContainerError> {
    let sd = rt.open(id, false)?;
    let record = sd.load()?;
    let status = record.status(&sd);
    if status == Status::Stopped {
        return Err(ContainerError::WrongStatus {
            id: id.into(),
            status,
            action: "read its statistics",
        });
    }
    let stats = record.cgroup.stats()?;
    Ok(serde_json::to_value(stats).unwrap_or_default())
}
