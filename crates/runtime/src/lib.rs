//! vessel's container engine: OCI runtime-spec containers built from Linux namespaces, a prepared root
//! filesystem, cgroups (v1, v2 and hybrid hosts) and a locked-down init process.
//!
//! The `vessel-runtime` binary is a runc-compatible command line over this library; the vessel daemon will
//! use the same API.

pub mod cgroups;
pub mod channel;
pub mod clock;
pub mod container;
pub mod hooks;
pub mod logging;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod sealed_exe;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod units;
