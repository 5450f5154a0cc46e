//! Building and running a VM that boots a Linux kernel, from a `VmConfig`.

use crate::acpi::{self, AcpiMachine, VirtioMmioWindow};
use crate::arch::boot::{self, BootError};
use crate::arch::layout::*;
use crate::arch::regs::StartMode;
use crate::config::{ConfigError, SerialConfig, VmConfig};
use crate::devices::ged::{Ged, GedRegister};
use crate::devices::input_feed::spawn_input_feed;
use crate::devices::legacy::{AcpiPowerRegisters, I8042};
use crate::devices::serial::{SerialPort, SerialSink, SerialSnapshot};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::console::Console;
use crate::devices::virtio::mmio::{MmioTransport, MmioWindow};
use crate::devices::virtio::net::{Net, NetError};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{Vsock, VsockError};
use crate::devices::virtio::VirtioDevice;
use crate::exit::VmExit;
use crate::kvm::{self, Flavour, KvmError, PVM_EXPLANATION};
use crate::memory::{self, MemoryError};
use crate::vm::{Vm, VmError};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error("{PVM_EXPLANATION}")]
    PvmHost,
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("Cannot write ACPI tables: {0}")]
    Acpi(#[from] acpi::AcpiError),
    #[error(transparent)]
    Disk(#[from] crate::devices::virtio::block::BlockError),
    #[error(transparent)]
    Nic(#[from] NetError),
    #[error(transparent)]
    Vsock(#[from] VsockError),
    #[error("Cannot restore the serial port: {0}")]
    SerialState(std::io::Error),
    #[error("Cannot open console output {path}: {source}")]
    ConsoleFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("Cannot start the console input thread: {0}")]
    ConsoleInput(std::io::Error),
}

/// Boots `config` and runs it to its end.
pub fn run(config: &VmConfig) -> Result<VmExit, LaunchError> {
    run_with(config, || {})
}

/// Like `run`, calling `on_ready` once the VMM holds KVM and is about to build the VM (what a
/// supervisor waits for before it counts the boot).
pub fn run_with(config: &VmConfig, on_ready: impl FnOnce()) -> Result<VmExit, LaunchError> {
    let kvm = open_kvm(config)?;
    on_ready();
    Ok(build(&kvm, config)?.run()?)
}

/// Checks `config` and opens KVM (refusing a stock kernel on kvm-pvm).
pub fn open_kvm(config: &VmConfig) -> Result<kvm_ioctls::Kvm, LaunchError> {
    config.validate()?;
    if Flavour::detect() == Flavour::Pvm && !config.pvm_guest_kernel {
        return Err(LaunchError::PvmHost);
    }
    Ok(kvm::open()?)
}

/// Builds the VM `config` describes, ready to start: memory, kernel, devices, ACPI, vCPUs.
pub fn build(kvm: &kvm_ioctls::Kvm, config: &VmConfig) -> Result<Vm, LaunchError> {
    let mem = memory::create(config.memory_mib, memory::MIN_LINUX_MIB)?;
    // Disks first: a locked or missing disk should fail before anything costly.
    let disks = open_disks(config)?;
    let kernel = boot::load_kernel(&mem, &config.kernel)?;
    let initrd = config
        .initrd
        .as_deref()
        .map(|path| boot::load_initrd(&mem, &kernel, path))
        .transpose()?;
    let cmdline_len = boot::write_cmdline(&mem, &config.cmdline)?;
    boot::write_reset_vector(&mem)?;

    let mut vm = Vm::new(kvm, mem.clone(), config.cpus as u8)?;
    add_platform_devices(&mut vm, config, None)?;

    let windows = add_virtio_devices(&mut vm, config, disks)?;
    let machine = AcpiMachine {
        vcpus: config.cpus as u8,
        virtio_mmio: windows,
        serial: true,
        power_button: true,
    };
    let rsdp = acpi::write_acpi_tables(&mem, &machine)?;
    boot::write_boot_info(&mem, &kernel, cmdline_len, initrd, rsdp)?;
    vm.configure_vcpus(kernel.entry.0, StartMode::Kernel(kernel.mode))?;
    Ok(vm)
}

fn open_sink(config: &SerialConfig) -> Result<SerialSink, LaunchError> {
    Ok(match config {
        SerialConfig::Stdio => SerialSink::Stdout,
        SerialConfig::None => SerialSink::Discard,
        SerialConfig::File(path) => SerialSink::File(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LaunchError::ConsoleFile {
                    path: path.clone(),
                    source,
                })?,
        ),
    })
}

/// The virtio devices `config` asks for, in a fixed order (disks, NICs, vsock, rng, console) so
/// that a restore rebuilds the same windows; returns the windows for the ACPI tables.
pub fn add_virtio_devices(
    vm: &mut Vm,
    config: &VmConfig,
    disks: Vec<Block>,
) -> Result<Vec<VirtioMmioWindow>, LaunchError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = disks.into_iter().map(|d| Box::new(d) as _).collect();
    for nic in &config.nics {
        devices.push(Box::new(Net::new(&nic.tap, nic.mac_bytes()?)?));
    }
    if let Some(vsock) = &config.vsock {
        devices.push(Box::new(Vsock::new(vsock.guest_cid, &vsock.uds_path)?));
    }
    if config.rng {
        devices.push(Box::new(Rng::new()));
    }
    if config.console != SerialConfig::None {
        let console = Console::new(Box::new(open_sink(&config.console)?));
        if config.console == SerialConfig::Stdio {
            let input = console.input();
            spawn_input_feed(move |bytes| input.queue_input(bytes), std::io::stdin())
                .map_err(LaunchError::ConsoleInput)?;
        }
        devices.push(Box::new(console));
    }
    let mut windows = Vec::with_capacity(devices.len());
    for (index, mut device) in devices.into_iter().enumerate() {
        device.set_pause_gate(vm.pause_gate());
        let (base, gsi) = virtio_mmio_window(index as u32);
        let irq = vm.irq_line(gsi)?;
        let transport = Arc::new(Mutex::new(MmioTransport::new(vm.memory().clone(), device, irq)));
        let window = MmioWindow::new(transport.clone());
        vm.add_mmio_device(base, VIRTIO_MMIO_SIZE, Arc::new(Mutex::new(window)))?;
        vm.add_virtio_transport(base, transport)?;
        windows.push(VirtioMmioWindow {
            base,
            size: VIRTIO_MMIO_SIZE,
            gsi,
        });
    }
    Ok(windows)
}

/// Opens the disks `config` names (first, so that a locked or missing disk fails early).
pub fn open_disks(config: &VmConfig) -> Result<Vec<Block>, LaunchError> {
    Ok(config
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Block::open(
                &d.path,
                d.read_only,
                d.id.clone().unwrap_or_else(|| format!("vd{i}")),
            )
        })
        .collect::<Result<Vec<_>, _>>()?)
}

/// COM1 (fresh, or in a snapshot's state), the i8042, the ACPI power registers and the ACPI
/// event device (the power button); the VM keeps `config` and the serial port for snapshots.
pub fn add_platform_devices(
    vm: &mut Vm,
    config: &VmConfig,
    serial_state: Option<&SerialSnapshot>,
) -> Result<(), LaunchError> {
    add_serial(vm, &config.serial, serial_state)?;
    // One device spans data (0x60) to command (0x64); the in-kernel PIT answers 0x61 first.
    vm.add_port_device(
        I8042_DATA_PORT,
        I8042::LEN,
        Arc::new(Mutex::new(I8042::new(vm.exit_sender()))),
    )?;
    let power = Arc::new(Mutex::new(AcpiPowerRegisters::new(vm.exit_sender())));
    vm.add_port_device(ACPI_SLEEP_CONTROL_PORT, AcpiPowerRegisters::LEN as u16, power)?;
    let ged = Arc::new(Ged::new(vm.irq_line(ACPI_GED_GSI)?));
    vm.add_port_device(
        ACPI_GED_STATUS_PORT,
        Ged::LEN,
        Arc::new(Mutex::new(GedRegister(ged.clone()))),
    )?;
    vm.set_ged(ged);
    vm.set_config(config.clone());
    Ok(())
}

fn add_serial(vm: &mut Vm, config: &SerialConfig, state: Option<&SerialSnapshot>) -> Result<(), LaunchError> {
    let sink = Box::new(open_sink(config)?);
    let irq = vm.irq_line(COM1_GSI)?;
    let port = match state {
        Some(state) => SerialPort::restore(irq, sink, state).map_err(LaunchError::SerialState)?,
        None => SerialPort::new(irq, sink),
    };
    let port = Arc::new(Mutex::new(port));
    vm.add_port_device(COM1_PORT, 8, port.clone())?;
    vm.set_serial(port.clone());
    if *config == SerialConfig::Stdio {
        // The feed thread is left to end with the process: it may be blocked reading stdin.
        let feed = move |bytes: &[u8]| port.lock().unwrap_or_else(|p| p.into_inner()).feed(bytes);
        spawn_input_feed(feed, std::io::stdin()).map_err(LaunchError::ConsoleInput)?;
    }
    Ok(())
}
