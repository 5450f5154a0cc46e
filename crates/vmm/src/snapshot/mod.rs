//! A whole VM in one file: a versioned, checksummed header, guest memory (sparse, page
//! aligned, mapped back lazily on restore) and the machine state (vCPUs, IRQ chip, PIT, clock,
//! devices) as JSON.
//!
//! ```text
//! 0      header (4 KiB): magic, version, offsets and lengths, SHA-256 of the state, SHA-256 of the header
//! 4096   guest memory, each RAM range back to back (holes where the guest had zeros)
//! ...    state (JSON)
//! ```
//! Every virtio device is saved (transport registers and queue positions: a paused VM's device
//! threads are held outside their work, so none is in flight); a device that could not say its
//! state would be refused rather than written into a snapshot that would not resume. Disks are not copied: restore reopens the same files; a NIC reopens (or recreates) its
//! tap by name; vsock's host connections belong to the old process, so the restored device tells
//! the guest they are gone (a transport reset) and listens on the same socket path again.

pub mod memory;
pub mod state;

use crate::config::{SerialConfig, VmConfig};
use crate::devices::serial::SerialSnapshot;
use crate::devices::virtio::device_kind;
use crate::devices::virtio::mmio::TransportSnapshot;
use crate::launch::{self, LaunchError};
use crate::vm::{RunningVm, Vm, VmError};
use memory::{RegionRecord, SnapshotMemoryError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use state::{StateError, VcpuState, VmState};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 16] = *b"VESSEL-VMM-SNAP\0";
/// The snapshot format this VMM writes and reads.
pub const VERSION: u32 = 1;
const HEADER_LEN: u64 = 4096;
/// Bytes of the header covered by its own checksum (everything before the checksum).
const HEADER_SIGNED: usize = 88;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("Cannot snapshot this VM: it was not built from a VM config")]
    NoConfig,
    #[error("Cannot snapshot a VM with a virtio {0} device yet: its backend's state cannot be saved")]
    VirtioDevice(&'static str),
    #[error("Snapshot {path} does not match the devices rebuilt from its config: {what}")]
    Devices { path: PathBuf, what: String },
    #[error("Cannot save vCPU {vcpu}: {error}")]
    Vcpu { vcpu: usize, error: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Memory(#[from] SnapshotMemoryError),
    #[error("Cannot write snapshot {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("Cannot read snapshot {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a vessel-vmm snapshot")]
    NotASnapshot { path: PathBuf },
    #[error("Snapshot {path} has format version {found}; this vessel-vmm reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("Snapshot {path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: &'static str },
    #[error("This host's CPU lacks features the snapshot's guest uses (CPUID leaf {leaf:#x} {register}: {missing:#x})")]
    CpuFeatures {
        leaf: u32,
        register: &'static str,
        missing: u32,
    },
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Ged(#[from] crate::devices::ged::GedError),
}

/// Everything but memory.
#[derive(Serialize, Deserialize)]
struct MachineState {
    config: VmConfig,
    vcpus: Vec<VcpuState>,
    vm: VmState,
    serial: Option<SerialSnapshot>,
    /// ACPI events (the power button) the guest had not read; absent in older files.
    #[serde(default)]
    ged_pending: u8,
    virtio: Vec<TransportSnapshot>,
    memory: Vec<RegionRecord>,
}

/// What a snapshot wrote.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotInfo {
    pub guest_bytes: u64,
    pub written_bytes: u64,
}

/// Writes `vm` to `path`. The VM is paused for the snapshot and left as it was found.
pub fn create(vm: &RunningVm, path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    let config = vm.extras().config.clone().ok_or(SnapshotError::NoConfig)?;
    // Refuse before pausing: a device whose state cannot be saved makes the snapshot useless.
    for transport in &vm.extras().virtio {
        let transport = transport.lock().unwrap_or_else(|e| e.into_inner());
        if transport.save().is_none() {
            return Err(SnapshotError::VirtioDevice(device_kind(transport.device_type())));
        }
    }
    let was_paused = vm.is_paused();
    let kvm = crate::kvm::open().map_err(|e| SnapshotError::Vcpu {
        vcpu: 0,
        error: e.to_string(),
    })?;
    let result = (|| {
        let vcpus = vm
            .pause_and_capture(state::msr_list(&kvm)?)
            .into_iter()
            .enumerate()
            .map(|(vcpu, s)| s.map_err(|error| SnapshotError::Vcpu { vcpu, error }))
            .collect::<Result<Vec<_>, _>>()?;
        let mut vcpus = vcpus;
        for (state, cpuid) in vcpus.iter_mut().zip(&vm.extras().cpuids) {
            state.cpuid = cpuid.clone();
        }
        let serial = vm
            .extras()
            .serial
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).save());
        // After the pause, so no vCPU moves a queue while it is read.
        let virtio = vm
            .extras()
            .virtio
            .iter()
            .map(|t| {
                let transport = t.lock().unwrap_or_else(|e| e.into_inner());
                transport
                    .save()
                    .ok_or(SnapshotError::VirtioDevice(device_kind(transport.device_type())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let machine = MachineState {
            config,
            vcpus,
            vm: VmState::capture(vm.kvm_vm())?,
            serial,
            ged_pending: vm.extras().ged.as_ref().map_or(0, |ged| ged.pending()),
            virtio,
            memory: memory::layout(vm.memory(), HEADER_LEN),
        };
        write_file(vm, path, &machine)
    })();
    if !was_paused {
        vm.resume();
    }
    result
}

fn write_file(vm: &RunningVm, path: &Path, machine: &MachineState) -> Result<SnapshotInfo, SnapshotError> {
    let write_err = |source| SnapshotError::Write {
        path: path.to_owned(),
        source,
    };
    let guest_bytes: u64 = machine.memory.iter().map(|r| r.len).sum();
    let state = serde_json::to_vec(machine).map_err(|e| write_err(std::io::Error::other(e)))?;
    let state_offset = HEADER_LEN + guest_bytes;
    // Write to a temporary name and rename: a crash never leaves a half snapshot under `path`.
    let partial = path.with_extension("partial");
    let file = File::create(&partial).map_err(write_err)?;
    file.set_len(state_offset).map_err(write_err)?;
    let written = memory::write_sparse(&file, vm.memory(), &machine.memory)?;
    file.write_all_at(&state, state_offset).map_err(write_err)?;
    let mut header = [0u8; HEADER_LEN as usize];
    header[..16].copy_from_slice(&MAGIC);
    header[16..20].copy_from_slice(&VERSION.to_le_bytes());
    header[24..32].copy_from_slice(&state_offset.to_le_bytes());
    header[32..40].copy_from_slice(&(state.len() as u64).to_le_bytes());
    header[40..72].copy_from_slice(&Sha256::digest(&state));
    header[72..80].copy_from_slice(&HEADER_LEN.to_le_bytes());
    header[80..88].copy_from_slice(&guest_bytes.to_le_bytes());
    let header_sum = Sha256::digest(&header[..HEADER_SIGNED]);
    header[HEADER_SIGNED..HEADER_SIGNED + 32].copy_from_slice(&header_sum);
    file.write_all_at(&header, 0).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&partial, path).map_err(write_err)?;
    Ok(SnapshotInfo {
        guest_bytes,
        written_bytes: written + state.len() as u64 + HEADER_LEN,
    })
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

/// Reads and checks the header and state of the snapshot at `path`.
fn read_state(path: &Path, file: &File) -> Result<MachineState, SnapshotError> {
    let read_err = |source| SnapshotError::Read {
        path: path.to_owned(),
        source,
    };
    let corrupt = |what| SnapshotError::Corrupt {
        path: path.to_owned(),
        what,
    };
    let mut header = [0u8; HEADER_LEN as usize];
    let len = file.metadata().map_err(read_err)?.len();
    if len < HEADER_LEN {
        return Err(SnapshotError::NotASnapshot {
            path: path.to_owned(),
        });
    }
    file.read_exact_at(&mut header, 0).map_err(read_err)?;
    if header[..16] != MAGIC {
        return Err(SnapshotError::NotASnapshot {
            path: path.to_owned(),
        });
    }
    let version = u32::from_le_bytes(header[16..20].try_into().unwrap_or_default());
    if version != VERSION {
        return Err(SnapshotError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    if Sha256::digest(&header[..HEADER_SIGNED])[..] != header[HEADER_SIGNED..HEADER_SIGNED + 32] {
        return Err(corrupt("the header checksum does not match"));
    }
    let (state_offset, state_len) = (u64_at(&header, 24), u64_at(&header, 32));
    let end = state_offset
        .checked_add(state_len)
        .ok_or_else(|| corrupt("the state is out of range"))?;
    if end > len || state_len > 64 << 20 {
        return Err(corrupt("the file is truncated"));
    }
    let mut state = vec![0u8; state_len as usize];
    file.read_exact_at(&mut state, state_offset).map_err(read_err)?;
    if Sha256::digest(&state)[..] != header[40..72] {
        return Err(corrupt("the state checksum does not match"));
    }
    let machine: MachineState =
        serde_json::from_slice(&state).map_err(|_| corrupt("the state does not parse"))?;
    let memory_ok = machine.memory.iter().all(|r| {
        r.file_offset % 4096 == 0
            && r.file_offset
                .checked_add(r.len)
                .is_some_and(|e| e <= state_offset)
    });
    if !memory_ok || machine.vcpus.is_empty() || machine.vcpus.len() > 254 {
        return Err(corrupt("the memory or vCPU layout is invalid"));
    }
    Ok(machine)
}

/// Refuses a snapshot whose guest saw CPU features this host's KVM cannot offer.
fn check_cpu(kvm: &kvm_ioctls::Kvm, saved: &VcpuState) -> Result<(), SnapshotError> {
    let supported = crate::arch::cpuid::supported(kvm).map_err(|source| StateError::Kvm {
        what: "read KVM's supported CPUID",
        source,
    })?;
    // Feature leaves only: 1 (ECX/EDX, minus the hypervisor bit the VMM sets), 7.0, 0x8000_0001.
    let find = |entries: &[kvm_bindings::kvm_cpuid_entry2], f: u32| {
        entries
            .iter()
            .find(|e| e.function == f && e.index == 0)
            .copied()
            .unwrap_or_default()
    };
    for leaf in [1u32, 7, 0x8000_0001] {
        let (have, want) = (find(supported.as_slice(), leaf), find(&saved.cpuid, leaf));
        let mut checks = vec![("ecx", have.ecx, want.ecx), ("edx", have.edx, want.edx)];
        if leaf == 7 {
            checks.push(("ebx", have.ebx, want.ebx));
        }
        for (register, have, mut want) in checks {
            if leaf == 1 && register == "ecx" {
                want &= !(1 << 31);
            }
            if leaf == 1 && register == "edx" {
                want &= !(1 << 28); // HTT follows the vCPU count, not the host
            }
            let missing = want & !have;
            if missing != 0 {
                return Err(SnapshotError::CpuFeatures {
                    leaf,
                    register,
                    missing,
                });
            }
        }
    }
    Ok(())
}

/// Builds a VM from the snapshot at `path`, ready to start where it stopped. Guest memory is
/// mapped privately from the file, so nothing is read until the guest touches it. `serial`
/// replaces the console destination saved in the snapshot (it names the old process's files).
pub fn restore(path: &Path, serial: SerialConfig) -> Result<Vm, SnapshotError> {
    let file = File::open(path).map_err(|source| SnapshotError::Read {
        path: path.to_owned(),
        source,
    })?;
    let machine = read_state(path, &file)?;
    let kvm = crate::kvm::open().map_err(|e| SnapshotError::Launch(e.into()))?;
    check_cpu(&kvm, &machine.vcpus[0])?;
    let config = VmConfig {
        serial,
        ..machine.config
    };
    // The disks first, as a boot opens them: a missing or locked one fails before anything costly.
    let disks = launch::open_disks(&config)?;
    let mem = memory::map_private(&file, &machine.memory)?;
    let mut vm = Vm::new(&kvm, mem, machine.vcpus.len() as u8)?;
    launch::add_platform_devices(&mut vm, &config, machine.serial.as_ref())?;
    // The same devices in the same windows as the boot (the ACPI tables in the restored memory
    // describe them); their saved state goes back once the interrupt controllers are in place.
    launch::add_virtio_devices(&mut vm, &config, disks)?;
    if vm.virtio_transports().len() != machine.virtio.len() {
        return Err(SnapshotError::Devices {
            path: path.to_owned(),
            what: format!(
                "{} virtio devices saved, {} rebuilt",
                machine.virtio.len(),
                vm.virtio_transports().len()
            ),
        });
    }
    machine.vm.apply(vm.kvm_vm())?;
    for (vcpu, saved) in vm.vcpus().iter().zip(&machine.vcpus) {
        saved.apply(vcpu)?;
    }
    // Last: a transport with InterruptStatus bits set raises its (edge-triggered) line again,
    // which must reach the restored IOAPIC and local APICs rather than be overwritten by them.
    // It covers an edge KVM had not yet delivered when the VM was paused; a spare one finds
    // InterruptStatus clear once handled and is ignored by the driver.
    restore_transports(path, &vm, &machine.virtio)?;
    if let Some(ged) = vm.ged() {
        ged.restore(machine.ged_pending)?;
    }
    vm.set_cpuids(machine.vcpus.iter().map(|v| v.cpuid.clone()).collect());
    Ok(vm)
}

fn restore_transports(path: &Path, vm: &Vm, saved: &[TransportSnapshot]) -> Result<(), SnapshotError> {
    for (index, (transport, saved)) in vm.virtio_transports().iter().zip(saved).enumerate() {
        let mut transport = transport.lock().unwrap_or_else(|e| e.into_inner());
        if !transport.restore(saved) {
            return Err(SnapshotError::Devices {
                path: path.to_owned(),
                what: format!(
                    "virtio device {index} ({} saved, {} rebuilt) does not take the saved state",
                    device_kind(saved.device_type),
                    device_kind(transport.device_type())
                ),
            });
        }
    }
    Ok(())
}
