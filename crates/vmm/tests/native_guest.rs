//! Native KVM tests with hand-made guests: real-mode and 64-bit code at low addresses, which
//! every /dev/kvm here runs (kvm-pvm included). They drive the vCPU loop, port and MMIO dispatch,
//! the serial device, guest memory and the power-off / reset paths through real KVM.

use std::io::Write;
use std::sync::{Arc, Mutex};
use vessel_vmm::arch::boot::EntryMode;
use vessel_vmm::arch::layout::*;
use vessel_vmm::arch::regs::StartMode;
use vessel_vmm::devices::bus::BusDevice;
use vessel_vmm::devices::legacy::{AcpiPowerRegisters, I8042};
use vessel_vmm::devices::serial::SerialPort;
use vessel_vmm::exit::VmExit;
use vessel_vmm::vm::Vm;
use vm_memory::{Bytes, GuestAddress};

const CODE_ADDR: u64 = 0x1000;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An MMIO device that remembers writes and answers reads with a fixed byte pattern.
#[derive(Default)]
struct MmioProbe {
    writes: Vec<(u64, Vec<u8>)>,
}
impl BusDevice for MmioProbe {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = 0x40 + offset as u8 + i as u8;
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes.push((offset, data.to_vec()));
    }
}

struct Guest {
    vm: Vm,
    console: Captured,
}

fn kvm() -> kvm_ioctls::Kvm {
    vessel_vmm::kvm::open().expect("these tests need /dev/kvm (hardware KVM or kvm-pvm)")
}

/// A VM with `code` at CODE_ADDR, COM1, the i8042 and the ACPI power registers.
fn guest(code: &[u8], vcpus: u8, mode: StartMode) -> Guest {
    let mem = vessel_vmm::memory::create(16, 1).unwrap();
    mem.write_slice(code, GuestAddress(CODE_ADDR)).unwrap();
    let mut vm = Vm::new(&kvm(), mem, vcpus).unwrap();
    let console = Captured::default();
    let serial = SerialPort::new(vm.irq_line(COM1_GSI).unwrap(), Box::new(console.clone()));
    vm.add_port_device(COM1_PORT, 8, Arc::new(Mutex::new(serial)))
        .unwrap();
    vm.add_port_device(
        I8042_DATA_PORT,
        I8042::LEN,
        Arc::new(Mutex::new(I8042::new(vm.exit_sender()))),
    )
    .unwrap();
    let power = AcpiPowerRegisters::new(vm.exit_sender());
    vm.add_port_device(ACPI_SLEEP_CONTROL_PORT, 3, Arc::new(Mutex::new(power)))
        .unwrap();
    vm.configure_vcpus(CODE_ADDR, mode).unwrap();
    Guest { vm, console }
}

/// `out dx, al` of each byte of `text` to COM1 (16- and 64-bit encodings agree for these).
fn print(text: &[u8], long_mode: bool) -> Vec<u8> {
    let mut code = if long_mode {
        vec![0xba, 0xf8, 0x03, 0x00, 0x00]
    } else {
        vec![0xba, 0xf8, 0x03]
    };
    for &b in text {
        code.extend([0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    code
}

/// Sleep-control write of S5 | SLP_EN, then halt forever.
fn power_off(long_mode: bool) -> Vec<u8> {
    let value = (ACPI_S5_SLEEP_TYPE << 2) | (1 << 5);
    let mut code = if long_mode {
        vec![0xba, 0x00, 0x06, 0x00, 0x00]
    } else {
        vec![0xba, 0x00, 0x06]
    };
    code.extend([0xb0, value, 0xee, 0xf4, 0xeb, 0xfd]); // mov al; out; hlt; jmp hlt
    code
}

#[test]
fn real_mode_guest_prints_on_the_serial_port_and_powers_off() {
    let code = [print(b"hello from real mode\n", false), power_off(false)].concat();
    let guest = guest(&code, 1, StartMode::Real);
    assert_eq!(guest.vm.run().unwrap(), VmExit::PowerOff);
    assert_eq!(&*guest.console.0.lock().unwrap(), b"hello from real mode\n");
}

#[test]
fn long_mode_guest_uses_mmio_and_memory() {
    // mov rax, PROBE; mov byte [rax+8], 0x5a; mov bl, [rax+2]; mov [0x5000], bl (via rcx);
    // then print bl on COM1 and power off. The probe sits inside the 1 GiB the boot page
    // tables map, above the guest's 16 MiB of RAM.
    const PROBE: u64 = 0x2000_0000;
    let mut code = vec![0x48, 0xb8];
    code.extend(PROBE.to_le_bytes());
    code.extend([0xc6, 0x40, 0x08, 0x5a]); // mov byte [rax+8], 0x5a
    code.extend([0x8a, 0x58, 0x02]); // mov bl, [rax+2]
    code.extend([0x48, 0xb9]); // mov rcx, 0x5000
    code.extend(0x5000u64.to_le_bytes());
    code.extend([0x88, 0x19]); // mov [rcx], bl
    code.extend([0xba, 0xf8, 0x03, 0x00, 0x00, 0x88, 0xd8, 0xee]); // mov edx, 0x3f8; mov al, bl; out
    code.extend(power_off(true));
    let mut guest = guest(&code, 1, StartMode::Kernel(EntryMode::Linux64));
    let probe = Arc::new(Mutex::new(MmioProbe::default()));
    guest.vm.add_mmio_device(PROBE, 0x1000, probe.clone()).unwrap();
    let mem = guest.vm.memory().clone();
    assert_eq!(guest.vm.run().unwrap(), VmExit::PowerOff);
    assert_eq!(probe.lock().unwrap().writes, vec![(8, vec![0x5a])]);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(0x5000)).unwrap(),
        0x42,
        "byte read over MMIO, stored by the guest"
    );
    assert_eq!(&*guest.console.0.lock().unwrap(), &[0x42]);
}

#[test]
fn keyboard_controller_reset_ends_the_run_as_a_reset() {
    // mov al, 0xfe; out 0x64, al; hlt
    let guest = guest(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd], 1, StartMode::Real);
    assert_eq!(guest.vm.run().unwrap(), VmExit::Reset { how: "i8042 reset" });
}

#[test]
fn unclaimed_ports_read_all_ones() {
    // in al, 0x71 (nobody there); out 0x3f8 (COM1), al; power off
    let mut code = vec![0xe4, 0x71, 0xba, 0xf8, 0x03, 0xee];
    code.extend(power_off(false));
    let guest = guest(&code, 1, StartMode::Real);
    assert_eq!(guest.vm.run().unwrap(), VmExit::PowerOff);
    assert_eq!(&*guest.console.0.lock().unwrap(), &[0xff]);
}

#[test]
fn secondary_vcpus_wait_and_are_stopped_with_the_vm() {
    let code = [print(b"bsp\n", false), power_off(false)].concat();
    let guest = guest(&code, 4, StartMode::Real);
    assert_eq!(guest.vm.vcpu_count(), 4);
    assert_eq!(guest.vm.run().unwrap(), VmExit::PowerOff);
    assert_eq!(&*guest.console.0.lock().unwrap(), b"bsp\n");
}

#[test]
fn a_guest_that_spins_is_stopped_by_another_device_exit() {
    // The guest loops forever; the test powers the VM off from outside through the exit channel.
    let guest = guest(&[0xeb, 0xfe], 2, StartMode::Real);
    let exits = guest.vm.exit_sender();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        exits.send(VmExit::PowerOff).unwrap();
    });
    assert_eq!(guest.vm.run().unwrap(), VmExit::PowerOff);
    stopper.join().unwrap();
}

#[test]
fn a_jump_to_the_reset_vector_resets_the_vm() {
    // What Linux does last when asked to reboot: a far jump to F000:FFF0, in real mode.
    let guest = guest(&[0xea, 0xf0, 0xff, 0x00, 0xf0], 1, StartMode::Real); // jmp f000:fff0
    vessel_vmm::arch::boot::write_reset_vector(guest.vm.memory()).unwrap();
    assert_eq!(
        guest.vm.run().unwrap(),
        VmExit::Reset {
            how: "ACPI reset register"
        }
    );
}

/// Remembers the last 32-bit value written to its port.
#[derive(Default)]
struct CounterPort(Arc<Mutex<u32>>);
impl BusDevice for CounterPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            *self.0.lock().unwrap() = u32::from_le_bytes(bytes);
        }
    }
}

/// xor ebx, ebx; loop: inc ebx; mov eax, ebx; mov edx, 0x500; out dx, eax; jmp loop
const COUNTER_GUEST: [u8; 14] = [
    0x31, 0xdb, 0xff, 0xc3, 0x89, 0xd8, 0xba, 0x00, 0x05, 0x00, 0x00, 0xef, 0xeb, 0xf4,
];
const COUNTER_PORT: u16 = 0x500;

/// Waits (up to 10 s, for loaded machines) until the count moves past `from`.
fn counts_past(counter: &Arc<Mutex<u32>>, from: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if *counter.lock().unwrap() > from {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

fn counter_after(counter: &Arc<Mutex<u32>>, wait_ms: u64) -> u32 {
    std::thread::sleep(std::time::Duration::from_millis(wait_ms));
    *counter.lock().unwrap()
}

#[test]
fn pause_stops_every_vcpu_and_resume_continues_the_count() {
    let mut guest = guest(&COUNTER_GUEST, 2, StartMode::Kernel(EntryMode::Linux64));
    let counter = Arc::new(Mutex::new(0));
    guest
        .vm
        .add_port_device(
            COUNTER_PORT,
            4,
            Arc::new(Mutex::new(CounterPort(counter.clone()))),
        )
        .unwrap();
    let running = guest.vm.start().unwrap();
    assert!(counts_past(&counter, 0), "the guest counts");
    running.pause();
    assert!(running.is_paused());
    let paused = counter_after(&counter, 0);
    assert_eq!(counter_after(&counter, 150), paused, "no vCPU runs while paused");
    running.resume();
    assert!(counts_past(&counter, paused), "the count goes on after resume");
    running.pause();
    running.pause();
    running.resume();
    running.exit_sender().send(VmExit::PowerOff).unwrap();
    assert_eq!(running.wait(), VmExit::PowerOff);
}

#[test]
fn a_paused_vm_can_still_be_stopped() {
    let mut guest = guest(&COUNTER_GUEST, 1, StartMode::Kernel(EntryMode::Linux64));
    guest
        .vm
        .add_port_device(COUNTER_PORT, 4, Arc::new(Mutex::new(CounterPort::default())))
        .unwrap();
    let running = guest.vm.start().unwrap();
    running.pause();
    running.exit_sender().send(VmExit::PowerOff).unwrap();
    assert_eq!(running.wait(), VmExit::PowerOff);
}

fn serial_counter_config(dir: &std::path::Path, serial: &str) -> vessel_vmm::config::VmConfig {
    let kernel = dir.join("counter.elf");
    std::fs::write(
        &kernel,
        vessel_vmm::handmade::elf_kernel(&vessel_vmm::handmade::serial_counter()),
    )
    .unwrap();
    serde_json::from_value(serde_json::json!({
        "kernel": kernel, "memory_mib": 64, "cpus": 2, "rng": false,
        "serial": format!("file:{}", dir.join(serial).display()),
        "pvm_guest_kernel": true,
    }))
    .unwrap()
}

fn wait_for_output(path: &std::path::Path) -> Vec<u8> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = std::fs::read(path).unwrap_or_default();
        if out.len() > 1000 || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn snapshot_and_restore_continue_the_guest_exactly() {
    let dir = std::env::temp_dir().join(format!("vessel-vmm-snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = serial_counter_config(&dir, "before.log");
    let kvm = vessel_vmm::launch::open_kvm(&config).unwrap();
    let running = vessel_vmm::launch::build(&kvm, &config).unwrap().start().unwrap();
    assert!(
        wait_for_output(&dir.join("before.log")).len() > 1000,
        "the guest counts"
    );
    running.pause();
    let snapshot = dir.join("vm.snap");
    let info = vessel_vmm::snapshot::create(&running, &snapshot).unwrap();
    assert!(running.is_paused(), "a paused VM stays paused");
    let before = std::fs::read(dir.join("before.log")).unwrap();
    running.exit_sender().send(VmExit::PowerOff).unwrap();
    running.wait();
    assert_eq!(info.guest_bytes, 64 << 20);
    assert!(
        info.written_bytes < 1 << 20,
        "zero pages are holes: {} bytes written",
        info.written_bytes
    );

    let serial = vessel_vmm::config::SerialConfig::File(dir.join("after.log"));
    let restored = vessel_vmm::snapshot::restore(&snapshot, serial)
        .unwrap()
        .start()
        .unwrap();
    let after = wait_for_output(&dir.join("after.log"));
    restored.exit_sender().send(VmExit::PowerOff).unwrap();
    restored.wait();
    let last = *before.last().unwrap();
    assert_eq!(
        after[0],
        last.wrapping_add(1),
        "the restored guest goes on from the saved count"
    );
    assert!(
        after.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "and keeps counting"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
