//! AppArmor profiles and SELinux labels for the container process: applied where the host has the LSM, a
//! clear error where it does not.

use std::path::Path;

use oci_spec::runtime::Process;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("AppArmor profile {0:?} requested, but AppArmor is not enabled on this host")]
    NoAppArmor(String),
    #[error("SELinux label {0:?} requested, but SELinux is not enabled on this host")]
    NoSelinux(String),
    #[error("Cannot apply {what} {label:?}: {source}")]
    Apply {
        what: &'static str,
        label: String,
        source: std::io::Error,
    },
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

fn wanted(label: &Option<String>) -> Option<&str> {
    label.as_deref().filter(|l| !l.is_empty())
}

/// Refuse early (at create) what cannot be applied later.
pub fn check(p: &Process) -> Result<(), LabelError> {
    if let Some(profile) = wanted(p.apparmor_profile()) {
        if !apparmor_enabled() {
            return Err(LabelError::NoAppArmor(profile.into()));
        }
    }
    if let Some(label) = wanted(p.selinux_label()) {
        if !selinux_enabled() {
            return Err(LabelError::NoSelinux(label.into()));
        }
    }
    Ok(())
}

/// Set the labels the next exec takes on.
pub fn apply(p: &Process) -> Result<(), LabelError> {
    if let Some(profile) = wanted(p.apparmor_profile()) {
        let attr = if Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        std::fs::write(attr, format!("exec {profile}")).map_err(|source| LabelError::Apply {
            what: "AppArmor profile",
            label: profile.into(),
            source,
        })?;
    }
    if let Some(label) = wanted(p.selinux_label()) {
        std::fs::write("/proc/self/attr/exec", label).map_err(|source| LabelError::Apply {
            what: "SELinux label",
            label: label.into(),
            source,
        })?;
    }
    Ok(())
}
