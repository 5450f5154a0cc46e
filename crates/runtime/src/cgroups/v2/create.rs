//! Making controllers usable in a new v2 cgroup: each ancestor enables them in its cgroup.subtree_control.

use std::path::Path;

use crate::cgroups::fs;

/// The v2 controllers a container may use (cgroup.freeze, devices and perf_event need no enabling).
const WANTED: &[&str] = &["cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma", "misc"];

/// Enables in every ancestor of `dir` from `mount_point` down (not in `dir` itself, which will hold processes)
/// the wanted controllers the ancestor offers. Failures are not errors here: a controller that cannot be enabled
/// (e.g. an ancestor with processes of its own) makes the setting that needs it fail later, with its file name.
pub(crate) fn enable_controllers(mount_point: &Path, dir: &Path) {
    let Ok(rel) = dir.strip_prefix(mount_point) else {
        return;
    };
    let mut current = mount_point.to_path_buf();
    for component in rel.components() {
        enable_in(&current);
        current.push(component);
    }
}

fn enable_in(dir: &Path) {
    let available = fs::read(dir, "cgroup.controllers").unwrap_or_default();
    let enabled = fs::read(dir, "cgroup.subtree_control").unwrap_or_default();
    for c in available.split_whitespace() {
        if WANTED.contains(&c) && !enabled.split_whitespace().any(|e| e == c) {
            let _ = fs::write_raw(dir, "cgroup.subtree_control", &format!("+{c}"));
        }
    }
}
