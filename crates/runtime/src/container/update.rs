//! `update`: change a live container's cgroup resources and remember them in its record.

use oci_spec::runtime::LinuxResources;

use super::{ContainerError, Runtime};
use crate::state::Status;

pub fn update(rt: &Runtime, id: &str, resources: &LinuxResources) -> Result<(), ContainerError> {
    let sd = rt.open(id, true)?;
    let mut record = sd.load()?;
    let status = record.status(&sd);
    if status == Status::Stopped {
        return Err(ContainerError::WrongStatus {
            id: id.into(),
            status,
            action: "update it",
        });
    }
    record.cgroup.apply(resources)?;
    let mut linux = record.spec.linux().clone().unwrap_or_default();
    linux.set_resources(Some(resources.clone()));
    record.spec.set_linux(Some(linux));
    sd.save(&record)?;
    Ok(())
}
