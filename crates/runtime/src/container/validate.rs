//! Checks of the config that must fail `create` before anything is set up, for what the kernel would
//! otherwise accept silently or apply to the host.

use oci_spec::runtime::{Linux, LinuxNamespaceType};

use super::ContainerError;
use crate::namespaces::Plan;

fn invalid(msg: String) -> ContainerError {
    ContainerError::Config(msg)
}

pub fn linux(linux: &Linux, plan: &Plan) -> Result<(), ContainerError> {
    for (what, list) in [
        ("maskedPaths", linux.masked_paths()),
        ("readonlyPaths", linux.readonly_paths()),
    ] {
        if let Some(p) = list.iter().flatten().find(|p| !p.starts_with('/')) {
            return Err(invalid(format!(
                "linux.{what} entry {p:?} is not an absolute path"
            )));
        }
    }
    if let Some(label) = linux.mount_label().as_deref().filter(|l| !l.is_empty()) {
        if !std::path::Path::new("/sys/fs/selinux/enforce").exists() {
            return Err(invalid(format!(
                "linux.mountLabel {label:?} is set, but SELinux is not enabled on this host"
            )));
        }
    }
    for key in linux.sysctl().iter().flatten().map(|(k, _)| k) {
        sysctl_allowed(key, plan)?;
    }
    Ok(())
}

/// A sysctl is allowed only if it belongs to a namespace the container has of its own; anything else would
/// change the host.
fn sysctl_allowed(key: &str, plan: &Plan) -> Result<(), ContainerError> {
    let ns = if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if key.starts_with("fs.mqueue.")
        || [
            "kernel.msgmax",
            "kernel.msgmnb",
            "kernel.msgmni",
            "kernel.sem",
            "kernel.shmall",
            "kernel.shmmax",
            "kernel.shmmni",
            "kernel.shm_rmid_forced",
        ]
        .contains(&key)
    {
        LinuxNamespaceType::Ipc
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        LinuxNamespaceType::Uts
    } else {
        return Err(invalid(format!(
            "sysctl {key:?} is not namespaced: setting it would change the host"
        )));
    };
    if plan.has(ns) {
        Ok(())
    } else {
        Err(invalid(format!(
            "sysctl {key:?} needs the container's own {} namespace",
            crate::namespaces::kind_name(ns)
        )))
    }
}
