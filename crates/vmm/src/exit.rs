//! Why a VM stopped: the events that end the VMM's run, sent by vCPU threads and devices.

use std::sync::mpsc::Sender;

/// How a VM's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest asked for a reset (reboot); `how` names the mechanism it used.
    Reset { how: &'static str },
    /// A vCPU hit something the VMM cannot continue from.
    VcpuFailed { vcpu: u8, error: String },
}

impl VmExit {
    /// The VMM's exit status for this end: 0 power-off, 3 reset, 1 failure.
    pub fn status(&self) -> i32 {
        match self {
            VmExit::PowerOff => 0,
            VmExit::Reset { .. } => 3,
            VmExit::VcpuFailed { .. } => 1,
        }
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::PowerOff => write!(f, "guest powered off"),
            VmExit::Reset { how } => write!(f, "guest reset (reboot, via {how})"),
            VmExit::VcpuFailed { vcpu, error } => write!(f, "vCPU {vcpu} failed: {error}"),
        }
    }
}

/// Where devices and vCPUs report the end of the run (the first report wins).
pub type ExitSender = Sender<VmExit>;
