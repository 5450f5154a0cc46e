//! The one error type of the cgroups module.
//!
//! Every message starts with a capital, names the file, directory or setting involved and ends with the cause, so
//! that a user sees one clear line. The OS error is part of the message (not a `source`) so that error-chain
//! printers do not repeat it.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while resolving, creating, configuring, inspecting or removing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or a /proc file could not be read.
    #[error("Failed to read {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },

    /// The kernel refused a value written to a cgroup file.
    #[error("Failed to write '{value}' to {path}: {cause}{hint}")]
    Write {
        path: PathBuf,
        value: String,
        cause: io::Error,
        hint: &'static str,
    },

    /// A cgroup or /proc file did not have the expected format.
    #[error("Failed to parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },

    /// A cgroup directory could not be created.
    #[error("Failed to create cgroup directory {path}: {cause}")]
    Mkdir { path: PathBuf, cause: io::Error },

    /// A cgroup directory could not be removed.
    #[error("Failed to remove cgroup directory {path}: {cause}{hint}")]
    Rmdir {
        path: PathBuf,
        cause: io::Error,
        hint: &'static str,
    },

    /// /proc/self/mountinfo lists no cgroup filesystem at all.
    #[error("No cgroup hierarchy is mounted: /proc/self/mountinfo lists no cgroup or cgroup2 filesystem")]
    NoHierarchies,

    /// The OCI `linux.cgroupsPath` cannot be used.
    #[error("Invalid cgroups path '{path}': {reason}")]
    InvalidPath { path: String, reason: String },

    /// The container id cannot be used to build a cgroup path.
    #[error("Invalid container id '{id}' for a cgroup path: {reason}")]
    InvalidId { id: String, reason: &'static str },

    /// A relative cgroups path needs the runtime's own cgroup, which /proc/self/cgroup does not list.
    #[error("Cannot resolve relative cgroups path '{path}': /proc/self/cgroup has no entry for the {hierarchy} hierarchy")]
    OwnCgroupUnknown { path: String, hierarchy: String },

    /// The spec asks for a setting whose controller is not mounted or not enabled on this host.
    #[error("Cannot apply {setting}: the cgroup controller '{controller}' is not available on this host")]
    ControllerMissing { setting: String, controller: String },

    /// The spec asks for something this host or this cgroup version cannot do.
    #[error("Cannot apply {setting}: {reason}")]
    Unsupported { setting: String, reason: String },

    /// A resource value in the spec is out of range or inconsistent.
    #[error("Invalid {setting}: {reason}")]
    InvalidResource { setting: String, reason: String },

    /// A freezer state change did not complete in time.
    #[error("Timed out after {seconds} s waiting for {path} to report {state}")]
    Timeout {
        path: PathBuf,
        state: &'static str,
        seconds: u64,
    },

    /// A bpf(2) operation for the cgroup v2 device filter failed.
    #[error("BPF {op} for {target} failed: {cause}{log}")]
    Bpf {
        op: &'static str,
        target: PathBuf,
        cause: io::Error,
        log: String,
    },
}

impl CgroupError {
    /// The OS error number behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Read { cause, .. }
            | CgroupError::Write { cause, .. }
            | CgroupError::Mkdir { cause, .. }
            | CgroupError::Rmdir { cause, .. }
            | CgroupError::Bpf { cause, .. } => cause.raw_os_error(),
            _ => None,
        }
    }
}

/// A short explanation appended to a failed write, chosen by the errno the kernel returned.
pub(crate) fn write_hint(cause: &io::Error) -> &'static str {
    match cause.raw_os_error() {
        Some(libc::ENOENT) => {
            " (the file does not exist: the controller is not enabled for this cgroup or the kernel lacks the feature)"
        }
        Some(libc::EBUSY) => " (the kernel refused it as busy: is the new limit below the current usage?)",
        Some(libc::ERANGE) => {
            " (the value is out of the range the kernel or the parent cgroup allows)"
        }
        Some(libc::EINVAL) => " (the kernel rejected the value: out of range, or not allowed by the parent cgroup)",
        Some(libc::EOPNOTSUPP) | Some(ENOTSUPP) => " (not supported by this kernel)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (permission denied)",
        _ => "",
    }
}

/// Linux's internal ENOTSUPP (524), which some cgroup files return to user space.
pub(crate) const ENOTSUPP: i32 = 524;
