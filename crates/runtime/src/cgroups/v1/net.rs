//! v1 `net_cls` (classid for traffic control) and `net_prio` (per-interface priorities). cgroup v2 has neither.

use std::path::Path;

use oci_spec::runtime::LinuxInterfacePriority;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;

pub(crate) fn apply_class_id(dir: &Path, class_id: u32) -> Result<(), CgroupError> {
    fs::write(dir, "net_cls.classid", class_id)
}

pub(crate) fn apply_priorities(dir: &Path, priorities: &[LinuxInterfacePriority]) -> Result<(), CgroupError> {
    for p in priorities {
        fs::write(
            dir,
            "net_prio.ifpriomap",
            format!("{} {}", p.name(), p.priority()),
        )?;
    }
    Ok(())
}
