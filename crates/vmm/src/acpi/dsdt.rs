//! DSDT: the `\_S5_` sleep package and the devices the guest cannot discover by itself, and the
//! Generic Event Device through which the VMM presses the guest's power button.

use super::{AcpiMachine, VirtioMmioWindow, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::layout;
use crate::devices::ged::EVENT_POWER_BUTTON;
use acpi_tables::aml::{
    And, Device, EISAName, Equal, Field, FieldAccessType, FieldEntry, FieldLockRule, FieldUpdateRule, If,
    Interrupt, Local, Memory32Fixed, Method, Name, Notify, OpRegion, OpRegionSpace, Package, Path,
    ResourceTemplate, Scope, Store, IO, ONE, ZERO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

/// ACPI ID the Linux virtio-mmio driver binds to (drivers/virtio/virtio_mmio.c,
/// `virtio_mmio_acpi_match`).
const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// 16550-compatible UART.
const COM_HID: &str = "PNP0501";
/// ACPI Generic Event Device (ACPI 6.5, 5.6.9).
const GED_HID: &str = "ACPI0013";
/// Control-method power button (ACPI 6.5, 4.8.2.2.1.2), what Linux's button driver binds to.
const POWER_BUTTON_HID: &str = "PNP0C0C";
/// `Notify` value a power button sends when pressed (ACPI 6.5, 5.6.6).
const NOTIFY_BUTTON_PRESSED: u8 = 0x80;
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
    if machine.power_button {
        power_button(&mut devices);
        event_device(&mut devices);
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

/// `Device (PWRB)`: the power button, which only ever learns of presses through `Notify`.
fn power_button(sink: &mut Vec<u8>) {
    let hid = Name::new(Path::new("_HID"), &EISAName::new(POWER_BUTTON_HID));
    let uid = Name::new(Path::new("_UID"), &ZERO);
    Device::new(Path::new("PWRB"), vec![&hid, &uid]).to_aml_bytes(sink);
}

/// `Device (GED0)`: the Generic Event Device. On its interrupt the guest runs `_EVT`, which reads
/// the VMM's event-status register (reading clears it) and notifies the power button if its bit
/// is set:
///
/// ```text
/// OperationRegion (GDST, SystemIO, ACPI_GED_STATUS_PORT, 1)
/// Field (GDST, ByteAcc, NoLock, Preserve) { GSTS, 8 }
/// Method (_EVT, 1, Serialized) {
///     Local0 = GSTS
///     If ((Local0 & EVENT_POWER_BUTTON) == EVENT_POWER_BUTTON) { Notify (\_SB.PWRB, 0x80) }
/// }
/// ```
fn event_device(sink: &mut Vec<u8>) {
    let hid = Name::new(Path::new("_HID"), &GED_HID);
    let uid = Name::new(Path::new("_UID"), &ZERO);
    let irq = edge_interrupt(layout::ACPI_GED_GSI);
    let crs = ResourceTemplate::new(vec![&irq]);
    let crs = Name::new(Path::new("_CRS"), &crs);
    let port = layout::ACPI_GED_STATUS_PORT;
    let region = OpRegion::new(Path::new("GDST"), OpRegionSpace::SystemIO, &port, &ONE);
    let field = Field::new(
        Path::new("GDST"),
        FieldAccessType::Byte,
        FieldLockRule::NoLock,
        FieldUpdateRule::Preserve,
        vec![FieldEntry::Named(*b"GSTS", 8)],
    );
    let (events, status) = (Local(0), Path::new("GSTS"));
    let read = Store::new(&events, &status);
    let bit = EVENT_POWER_BUTTON;
    let masked = And::new(&ZERO, &events, &bit);
    let pressed = Equal::new(&masked, &bit);
    let button = Path::new("\\_SB_.PWRB");
    let notify = Notify::new(&button, &NOTIFY_BUTTON_PRESSED);
    let on_press = If::new(&pressed, vec![&notify]);
    let evt = Method::new(Path::new("_EVT"), 1, true, vec![&read, &on_press]);
    Device::new(Path::new("GED0"), vec![&hid, &uid, &crs, &region, &field, &evt]).to_aml_bytes(sink);
}

/// Extended interrupt descriptor: consumer, edge-triggered, active-high, exclusive. KVM injects
/// device interrupts as edges on an IOAPIC pin (irqfd), so that is what the guest must program.
fn edge_interrupt(gsi: u32) -> Interrupt {
    Interrupt::new(true, true, false, false, gsi)
}
