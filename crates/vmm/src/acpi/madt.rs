//! MADT: the vCPUs' local APICs and the one IOAPIC that carries every GSI.

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::layout;
use acpi_tables::madt::{EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT};
use acpi_tables::Aml;

const LAPIC_ADDR: u32 = below_4g(layout::LAPIC_ADDR);
const IOAPIC_ADDR: u32 = below_4g(layout::IOAPIC_ADDR);

/// The MADT has 32-bit address fields: a layout that moved an APIC above 4 GiB fails to compile.
const fn below_4g(addr: u64) -> u32 {
    assert!(addr <= u32::MAX as u64);
    addr as u32
}

/// The IOAPIC's own id; it lives in a separate namespace from the local APIC ids on x86-64.
const IOAPIC_ID: u8 = 0;

/// The MADT for `vcpus` vCPUs, as bytes.
///
/// The `PCAT_COMPAT` flag stays clear (no 8259 PICs to mask). No interrupt source overrides: with
/// a hardware-reduced FADT Linux has no legacy PIC and no PIT, so ISA IRQ 0's usual override to
/// GSI 2 would describe nothing, and every device's interrupt comes with its trigger mode and
/// polarity in its DSDT `_CRS`.
pub(super) fn madt(vcpus: u8) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    // ACPI processor UID = local APIC id = vCPU index, the ids KVM gives vCPUs by default.
    for cpu in 0..vcpus {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(IOAPIC_ID, IOAPIC_ADDR, 0));
    let mut bytes = Vec::new();
    madt.to_aml_bytes(&mut bytes);
    bytes
}
