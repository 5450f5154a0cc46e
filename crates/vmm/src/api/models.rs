//! The JSON bodies of the API. Request bodies reject unknown fields, so a misspelt field is an
//! error naming it rather than a setting silently ignored. api/openapi.json describes the same
//! shapes; tests/api.rs checks the two agree.

pub use crate::devices::virtio::metrics::DeviceMetrics;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(default)]
    pub initrd_path: Option<PathBuf>,
    /// The kernel command line; the VMM's default when absent.
    #[serde(default)]
    pub boot_args: Option<String>,
}

/// `PUT /machine-config` (every size field required) and `GET /machine-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u16,
    pub mem_size_mib: u64,
    /// The kernel is built as a PVM guest; absent in a PUT means the `--pvm-guest-kernel` flag.
    #[serde(default)]
    pub pvm_guest_kernel: Option<bool>,
}

/// `PATCH /machine-config`: only the fields given change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    #[serde(default)]
    pub vcpu_count: Option<u16>,
    #[serde(default)]
    pub mem_size_mib: Option<u64>,
    #[serde(default)]
    pub pvm_guest_kernel: Option<bool>,
}

/// `PUT /drives/{drive_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    pub is_read_only: bool,
}

/// `PUT /network-interfaces/{iface_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// The host's tap device (created at InstanceStart if it does not exist).
    pub host_dev_name: String,
    /// The guest's MAC address; random when absent.
    #[serde(default)]
    pub guest_mac: Option<String>,
}

/// `PUT /vsock`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
}

/// `PUT /actions`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ActionType {
    InstanceStart,
    /// Presses the ACPI power button: the guest is asked to shut down (and may decline).
    PressPowerButton,
    /// Refused: there is no i8042 keyboard to send it through.
    SendCtrlAltDel,
}

/// `PUT /snapshot/create`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    pub snapshot_path: std::path::PathBuf,
}

/// `PATCH /vm`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateUpdate {
    pub state: RequestedState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RequestedState {
    Paused,
    Resumed,
}

/// Where the instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
    /// The guest ended; the process exits with its status right after.
    Exited,
}

/// `GET /`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: &'static str,
}

/// `GET /metrics`: counters the VMM keeps itself, nothing estimated.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub state: InstanceState,
    /// Milliseconds since the API server started.
    pub uptime_ms: u64,
    /// Milliseconds since InstanceStart (or the boot from the command line); null before.
    pub vm_uptime_ms: Option<u64>,
    pub vcpu_count: u16,
    pub mem_size_mib: u64,
    pub drive_count: usize,
    /// Pauses and resumes that changed the state (repeated requests for the current state do not count).
    pub pause_count: u64,
    pub resume_count: u64,
    /// Milliseconds spent paused, the current pause included.
    pub paused_ms: u64,
    /// Requests answered, this one included, and how many of them got a 4xx or 5xx.
    pub api_requests: u64,
    pub api_errors: u64,
    /// One entry per virtio device; empty before the VM starts.
    pub devices: Vec<DeviceMetrics>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub fault_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named() {
        let err = serde_json::from_str::<MachineConfig>(r#"{"vcpu_count":1,"mem_size_mib":32,"vcpus":2}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `vcpus`"), "{err}");
        let err = serde_json::from_str::<Action>(r#"{"action_type":"Reboot"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `Reboot`"), "{err}");
    }

    #[test]
    fn states_serialize_as_documented() {
        let names: Vec<String> = [
            InstanceState::NotStarted,
            InstanceState::Running,
            InstanceState::Paused,
            InstanceState::Exited,
        ]
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
        assert_eq!(
            names,
            [r#""Not started""#, r#""Running""#, r#""Paused""#, r#""Exited""#]
        );
    }
}
