//! A KVM virtual machine: guest memory, the in-kernel IRQ chip and PIT, the buses, vCPUs, and
//! the run that ends when the guest powers off, resets or fails.

use crate::arch::cpuid::{self, CpuidError};
use crate::arch::layout::KVM_TSS_ADDR;
use crate::arch::regs::{self, RegsError, StartMode};
use crate::devices::bus::{Bus, BusDevice, BusError};
use crate::devices::irq::IrqLine;
use crate::devices::serial::SerialPort;
use crate::devices::virtio::metrics::DeviceMetrics;
use crate::devices::virtio::mmio::{MmioTransport, REG_QUEUE_NOTIFY};
use crate::devices::virtio::notifier::{DeviceWorkers, PauseGate, QueueEvents};
use crate::exit::{ExitSender, VmExit};
use crate::snapshot::state::VcpuState;
use crate::vcpu::{self, RunControl, VcpuContext};
use crate::GuestMemory;
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("Cannot {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("This host's KVM allows at most {max} vCPUs per VM; {asked} were asked for")]
    TooManyVcpus { asked: u8, max: usize },
    #[error("A VM needs at least one vCPU")]
    NoVcpus,
    #[error(transparent)]
    Regs(#[from] RegsError),
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    #[error("Cannot place a device: {0}")]
    Bus(#[from] BusError),
    #[error("Cannot create an interrupt line or vCPU thread: {0}")]
    Io(#[from] std::io::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// A VM being built, then run once.
pub struct Vm {
    kvm_vm: VmFd,
    mem: GuestMemory,
    vcpus: Vec<VcpuFd>,
    supported_cpuid: kvm_bindings::CpuId,
    pio: Bus,
    mmio: Bus,
    exits: ExitSender,
    exit_events: Receiver<VmExit>,
    extras: Extras,
    /// Devices whose notifications KVM turns into eventfd signals, for their workers.
    queue_events: Vec<QueueEvents>,
    /// Held by every device thread; closed while the VM is paused.
    pause_gate: Arc<PauseGate>,
}

/// Where the VM writes its devices' counters when it ends (`--metrics-path`); one VM per process.
static METRICS_PATH: OnceLock<PathBuf> = OnceLock::new();

/// Makes the VM write `{"exit": ..., "devices": [...]}` (as in GET /metrics) to `path` when it
/// ends. The file is created now, so a bad path is refused before the VM is built.
pub fn write_metrics_at_exit(path: PathBuf) -> std::io::Result<()> {
    std::fs::File::create(&path)?;
    let _ = METRICS_PATH.set(path);
    Ok(())
}

/// What a snapshot needs beyond KVM: the config the VM was built from, COM1 and the virtio
/// transports.
#[derive(Default)]
pub struct Extras {
    pub config: Option<crate::config::VmConfig>,
    pub serial: Option<Arc<Mutex<SerialPort>>>,
    pub virtio: Vec<Arc<Mutex<MmioTransport>>>,
    /// The CPUID table given to each vCPU: what the guest may have seen (KVM_GET_CPUID2 may
    /// report more, e.g. on kvm-pvm).
    pub cpuids: Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>,
    /// The ACPI event device, through which the API presses the power button.
    pub ged: Option<Arc<crate::devices::ged::Ged>>,
}

impl Vm {
    /// Creates the VM with its memory, IRQ chip, PIT and `vcpu_count` (not yet started) vCPUs.
    pub fn new(kvm: &Kvm, mem: GuestMemory, vcpu_count: u8) -> Result<Self, VmError> {
        if vcpu_count == 0 {
            return Err(VmError::NoVcpus);
        }
        let max = kvm.get_max_vcpus().min(u8::MAX as usize);
        if usize::from(vcpu_count) > max {
            return Err(VmError::TooManyVcpus {
                asked: vcpu_count,
                max,
            });
        }
        let kvm_vm = kvm.create_vm().map_err(kvm_err("create a KVM VM"))?;
        kvm_vm
            .set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(kvm_err("set the TSS address"))?;
        for (slot, region) in mem.iter().enumerate() {
            let host = mem
                .get_host_address(region.start_addr())
                .map_err(|_| VmError::Kvm {
                    what: "find guest memory's host mapping",
                    source: kvm_ioctls::Error::new(libc::EFAULT),
                })?;
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range is a live mapping owned by `mem`, which the Vm keeps until
            // every vCPU thread has been joined, so KVM never sees it unmapped.
            unsafe { kvm_vm.set_user_memory_region(region) }.map_err(kvm_err("register guest memory"))?;
        }
        kvm_vm
            .create_irq_chip()
            .map_err(kvm_err("create the in-kernel IRQ chip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        kvm_vm.create_pit2(pit).map_err(kvm_err("create the PIT"))?;
        let supported_cpuid = cpuid::supported(kvm).map_err(kvm_err("read KVM's supported CPUID"))?;
        let vcpus = (0..vcpu_count)
            .map(|id| {
                kvm_vm
                    .create_vcpu(u64::from(id))
                    .map_err(kvm_err("create a vCPU"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (exits, exit_events) = channel();
        Ok(Self {
            kvm_vm,
            mem,
            vcpus,
            supported_cpuid,
            pio: Bus::new(),
            mmio: Bus::new(),
            exits,
            exit_events,
            extras: Extras::default(),
            queue_events: Vec::new(),
            pause_gate: Arc::default(),
        })
    }

    /// The gate device threads of this VM hold around their work (see `notifier::PauseGate`).
    pub fn pause_gate(&self) -> Arc<PauseGate> {
        self.pause_gate.clone()
    }

    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    pub fn config(&self) -> Option<&crate::config::VmConfig> {
        self.extras.config.as_ref()
    }

    pub fn set_config(&mut self, config: crate::config::VmConfig) {
        self.extras.config = Some(config);
    }

    pub fn ged(&self) -> Option<&Arc<crate::devices::ged::Ged>> {
        self.extras.ged.as_ref()
    }

    pub fn set_ged(&mut self, ged: Arc<crate::devices::ged::Ged>) {
        self.extras.ged = Some(ged);
    }

    pub fn set_serial(&mut self, port: Arc<Mutex<SerialPort>>) {
        self.extras.serial = Some(port);
    }

    pub fn virtio_transports(&self) -> &[Arc<Mutex<MmioTransport>>] {
        &self.extras.virtio
    }

    /// Records the CPUID tables a restore gave the vCPUs.
    pub fn set_cpuids(&mut self, cpuids: Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>) {
        self.extras.cpuids = cpuids;
    }

    /// Records a transport whose window starts at `base` and has KVM signal its queue
    /// notifications on eventfds (see `devices::virtio::notifier`). Should KVM refuse, the
    /// notifications keep reaching the transport through MMIO exits.
    pub fn add_virtio_transport(
        &mut self,
        base: u64,
        transport: Arc<Mutex<MmioTransport>>,
    ) -> Result<(), VmError> {
        self.extras.virtio.push(transport.clone());
        let device = QueueEvents::new(transport)?;
        let address = IoEventAddress::Mmio(base + REG_QUEUE_NOTIFY);
        for (index, event) in device.events.iter().enumerate() {
            if let Err(e) = self.kvm_vm.register_ioevent(event, &address, index as u32) {
                for (done, registered) in device.events[..index].iter().enumerate() {
                    let _ = self.kvm_vm.unregister_ioevent(registered, &address, done as u32);
                }
                eprintln!(
                    "vessel-vmm: queue notifications through MMIO exits: KVM refused an ioeventfd: {e}"
                );
                return Ok(());
            }
        }
        let taken = device
            .transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_queue_events(&device.events);
        if !taken {
            self.queue_events.push(device);
        }
        Ok(())
    }

    /// The KVM VM, for restoring VM-wide state before the start.
    pub fn kvm_vm(&self) -> &VmFd {
        &self.kvm_vm
    }

    /// The vCPUs, for restoring their state before the start.
    pub fn vcpus(&self) -> &[VcpuFd] {
        &self.vcpus
    }

    pub fn vcpu_count(&self) -> u8 {
        self.vcpus.len() as u8
    }

    /// Where devices report power-off and reset.
    pub fn exit_sender(&self) -> ExitSender {
        self.exits.clone()
    }

    /// An interrupt line wired to `gsi` of the IRQ chip.
    pub fn irq_line(&self, gsi: u32) -> Result<IrqLine, VmError> {
        let line = IrqLine::new(gsi)?;
        self.kvm_vm
            .register_irqfd(line.event(), gsi)
            .map_err(kvm_err("wire an interrupt line"))?;
        Ok(line)
    }

    pub fn add_port_device(
        &mut self,
        port: u16,
        len: u16,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), VmError> {
        Ok(self.pio.insert(port.into(), len.into(), dev)?)
    }

    pub fn add_mmio_device(
        &mut self,
        addr: u64,
        len: u64,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), VmError> {
        Ok(self.mmio.insert(addr, len, dev)?)
    }

    /// Sets every vCPU's CPUID, MSRs, FPU and LAPIC; vCPU 0 starts at `entry` in `mode`, the
    /// others wait for the boot processor's INIT/SIPI as on a PC.
    pub fn configure_vcpus(&mut self, entry: u64, mode: StartMode) -> Result<(), VmError> {
        let count = self.vcpu_count();
        for (id, vcpu) in self.vcpus.iter().enumerate() {
            let cpuid = cpuid::vcpu_cpuid(&self.supported_cpuid, id as u8, count)?;
            vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set a vCPU's CPUID"))?;
            self.extras.cpuids.push(cpuid.as_slice().to_vec());
            regs::setup_msrs(vcpu)?;
            regs::setup_fpu(vcpu)?;
            regs::setup_lapic(vcpu)?;
            if id == 0 {
                regs::setup_boot_vcpu(vcpu, &self.mem, entry, mode)?;
            }
        }
        Ok(())
    }

    /// Runs the vCPUs until the first exit event, then stops them all and returns that event.
    pub fn run(self) -> Result<VmExit, VmError> {
        Ok(self.start()?.wait())
    }

    /// Starts the vCPU threads; the returned handle pauses, resumes and waits for the end.
    pub fn start(self) -> Result<RunningVm, VmError> {
        let control = Arc::new(RunControl::default());
        let ctx = VcpuContext {
            pio: Arc::new(self.pio),
            mmio: Arc::new(self.mmio),
            exits: self.exits.clone(),
            control: control.clone(),
        };
        let workers = DeviceWorkers::spawn(self.queue_events, self.pause_gate.clone())?;
        let mut threads = Vec::with_capacity(self.vcpus.len());
        for (id, vcpu) in self.vcpus.into_iter().enumerate() {
            match vcpu::spawn(id as u8, vcpu, ctx.clone()) {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    control.stop_all(threads);
                    return Err(e.into());
                }
            }
        }
        Ok(RunningVm {
            control,
            threads: Mutex::new(threads),
            workers: Mutex::new(workers),
            pause_gate: self.pause_gate,
            exits: self.exits,
            exit_events: Mutex::new(self.exit_events),
            kvm_vm: self.kvm_vm,
            mem: self.mem,
            extras: self.extras,
        })
    }
}

/// A VM whose vCPUs are running (or paused).
pub struct RunningVm {
    control: Arc<RunControl>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    workers: Mutex<DeviceWorkers>,
    pause_gate: Arc<PauseGate>,
    exits: ExitSender,
    exit_events: Mutex<Receiver<VmExit>>,
    // Declared after the threads: guest memory and the VM outlive every vCPU.
    kvm_vm: VmFd,
    mem: GuestMemory,
    extras: Extras,
}

impl RunningVm {
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    pub fn is_paused(&self) -> bool {
        self.control.paused()
    }

    /// Stops every vCPU outside KVM_RUN; returns when all are parked. The guest's kvmclock is
    /// told (KVM_KVMCLOCK_CTRL) so the pause does not look like a soft lockup on resume.
    /// Device threads are held too, once no vCPU can notify them any more.
    pub fn pause(&self) {
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        self.control.pause(&threads);
        self.pause_gate.pause();
    }

    pub fn resume(&self) {
        self.pause_gate.resume();
        self.control.resume();
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, DeviceWorkers> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where an outside party (the API, a test) can end the run.
    pub fn exit_sender(&self) -> ExitSender {
        self.exits.clone()
    }

    /// The KVM clock, for callers that stop time across a pause or a snapshot.
    pub fn clock(&self) -> Result<kvm_bindings::kvm_clock_data, VmError> {
        self.kvm_vm.get_clock().map_err(kvm_err("read the KVM clock"))
    }

    pub fn extras(&self) -> &Extras {
        &self.extras
    }

    pub fn kvm_vm(&self) -> &VmFd {
        &self.kvm_vm
    }

    /// Pauses the VM and has every vCPU save its state (for a snapshot).
    pub fn pause_and_capture(&self, msr_list: Vec<u32>) -> Vec<Result<VcpuState, String>> {
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let states = self.control.pause_and_capture(&threads, msr_list);
        self.pause_gate.pause();
        states
    }

    /// What each virtio device did so far (and after `wait`, in all).
    pub fn device_metrics(&self) -> Vec<DeviceMetrics> {
        let lock = |t: &Arc<Mutex<MmioTransport>>| t.lock().unwrap_or_else(|p| p.into_inner()).metrics();
        self.extras.virtio.iter().map(lock).collect()
    }

    /// Blocks until the first exit event, then stops the vCPUs and returns that event.
    pub fn wait(&self) -> VmExit {
        let exit = {
            let events = self.exit_events.lock().unwrap_or_else(|p| p.into_inner());
            // The VM holds a sender itself, so recv only ends with an event.
            events.recv().unwrap_or(VmExit::VcpuFailed {
                vcpu: 0,
                error: "no vCPU left".into(),
            })
        };
        self.stop();
        if let Some(path) = METRICS_PATH.get() {
            let metrics = serde_json::json!({
                "exit": exit.to_string(),
                "devices": self.device_metrics(),
            });
            if let Err(e) = std::fs::write(path, format!("{metrics}\n")) {
                eprintln!("vessel-vmm: metrics: {}: {e}", path.display());
            }
        }
        exit
    }

    fn stop(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        self.control.stop_all(threads);
        self.workers().stop();
    }
}

impl Drop for RunningVm {
    /// A handle dropped without `wait` must still stop its vCPUs before guest memory goes.
    fn drop(&mut self) {
        self.stop();
    }
}
