//! `linux.resources.unified`: raw cgroup v2 files, written last so that they override everything else.

use std::collections::HashMap;
use std::path::Path;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;

pub(crate) fn apply(dir: &Path, unified: &HashMap<String, String>) -> Result<(), CgroupError> {
    let mut keys: Vec<&String> = unified.keys().collect();
    keys.sort();
    for key in keys {
        let setting = format!("linux.resources.unified key '{key}'");
        if key.is_empty() || key.contains('/') || key == "." || key == ".." || key.contains('\0') {
            let reason = "a key must be the name of a file in the cgroup directory".to_string();
            return Err(CgroupError::InvalidResource { setting, reason });
        }
        if !fs::has(dir, key) {
            let controller = key.split('.').next().unwrap_or(key);
            let reason = format!(
                "{} does not exist: the '{controller}' controller is not enabled for this cgroup on cgroup v2 \
                 (on a hybrid host it may be a v1 controller)",
                dir.join(key).display()
            );
            return Err(CgroupError::Unsupported { setting, reason });
        }
        fs::write(dir, key, &unified[key])?;
    }
    Ok(())
}
