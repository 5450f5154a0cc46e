//! v1 `devices`: deny everything, then write each rule in order to devices.allow or devices.deny.
//!
//! Rewriting the list on a running container briefly denies all devices between the first write and the
//! rules that follow; the kernel offers no atomic replacement on v1.

use std::path::Path;

use crate::cgroups::device_rules::DeviceRule;
use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;

pub(crate) fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    fs::write(dir, "devices.deny", "a")?;
    for rule in rules {
        let file = if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        for entry in rule.v1_entries() {
            fs::write(dir, file, entry)?;
        }
    }
    Ok(())
}
