//! DSDT: the `\_S5_` sleep package and the devices the guest cannot discover by itself.

use super::{AcpiMachine, VirtioMmioWindow, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::layout;
use acpi_tables::aml::{
    Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope, IO, ZERO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

/// ACPI ID the Linux virtio-mmio driver binds to (drivers/virtio/virtio_mmio.c,
/// `virtio_mmio_acpi_match`).
const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// 16550-compatible UART.
const COM_HID: &str = "PNP0501";
/// Number of I/O ports a 16550 decodes.
const COM_PORTS: u8 = 8;
/// DSDT revision 2 and above gives AML 64-bit integers.
const DSDT_REVISION: u8 = 6;
/// Bytes of the standard table header, which `Sdt` starts with.
const HEADER_LEN: u32 = 36;

/// The DSDT for `machine`, as bytes. `machine` has been validated: windows fit in 32 bits.
pub(super) fn dsdt(machine: &AcpiMachine) -> Vec<u8> {
    let mut aml = Vec::new();
    s5().to_aml_bytes(&mut aml);

    let mut devices = Vec::new();
    if machine.serial {
        com1(&mut devices);
    }
    for (index, window) in machine.virtio_mmio.iter().enumerate() {
        virtio_mmio(index, window, &mut devices);
    }
    aml.extend(Scope::raw(Path::new("\\_SB_"), devices));

    let mut dsdt = Sdt::new(
        *b"DSDT",
        HEADER_LEN,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(&aml);
    dsdt.as_slice().to_vec()
}

/// `Name (\_S5_, Package { SLP_TYP_A, SLP_TYP_B, Reserved, Reserved })`: Linux offers poweroff
/// through ACPI only if `\_S5_` exists, and writes SLP_TYP_A to the FADT's sleep control register.
fn s5() -> Name {
    let sleep_type = layout::ACPI_S5_SLEEP_TYPE;
    Name::new(
        Path::new("\\_S5_"),
        &Package::new(vec![&sleep_type, &ZERO, &ZERO, &ZERO]),
    )
}

/// `Device (COM1)`: lets 8250_pnp claim the port with its interrupt, as on a PC.
fn com1(sink: &mut Vec<u8>) {
    let io = IO::new(layout::COM1_PORT, layout::COM1_PORT, 1, COM_PORTS);
    let irq = edge_interrupt(layout::COM1_GSI);
    let crs = ResourceTemplate::new(vec![&io, &irq]);
    let hid = Name::new(Path::new("_HID"), &EISAName::new(COM_HID));
    let uid = Name::new(Path::new("_UID"), &ZERO);
    let crs = Name::new(Path::new("_CRS"), &crs);
    Device::new(Path::new("COM1"), vec![&hid, &uid, &crs]).to_aml_bytes(sink);
}

/// `Device (VMxx)` for virtio-mmio device `index`: its register window and its interrupt.
fn virtio_mmio(index: usize, window: &VirtioMmioWindow, sink: &mut Vec<u8>) {
    // Validated: base and size fit in 32 bits.
    let memory = Memory32Fixed::new(true, window.base as u32, window.size as u32);
    let irq = edge_interrupt(window.gsi);
    let crs = ResourceTemplate::new(vec![&memory, &irq]);
    let hid = Name::new(Path::new("_HID"), &VIRTIO_MMIO_HID);
    let uid = Name::new(Path::new("_UID"), &(index as u32));
    let crs = Name::new(Path::new("_CRS"), &crs);
    // At most KVM_IOAPIC_NUM_PINS (24) devices pass validation: two hex digits name them all.
    let name = format!("VM{index:02X}");
    Device::new(Path::new(&name), vec![&hid, &uid, &crs]).to_aml_bytes(sink);
}

/// Extended interrupt descriptor: consumer, edge-triggered, active-high, exclusive. KVM injects
/// device interrupts as edges on an IOAPIC pin (irqfd), so that is what the guest must program.
fn edge_interrupt(gsi: u32) -> Interrupt {
    Interrupt::new(true, true, false, false, gsi)
}
