//! `pause` and `resume`: freeze and thaw every process of the container through its cgroup freezer.

use super::{ContainerError, Runtime};
use crate::state::Status;

pub fn pause(rt: &Runtime, id: &str) -> Result<(), ContainerError> {
    let sd = rt.open(id, true)?;
    let record = sd.load()?;
    match record.status(&sd) {
        Status::Running | Status::Created => Ok(record.cgroup.freeze()?),
        status => Err(ContainerError::WrongStatus {
            id: id.into(),
            status,
            action: "pause it",
        }),
    }
}

pub fn resume(rt: &Runtime, id: &str) -> Result<(), ContainerError> {
    let sd = rt.open(id, true)?;
    let record = sd.load()?;
    match record.status(&sd) {
        // Resumes to created or running, whichever it was.
        Status::Paused => Ok(record.cgroup.thaw()?),
        status => Err(ContainerError::WrongStatus {
            id: id.into(),
            status,
            action: "resume it (it is not paused)",
        }),
    }
}
