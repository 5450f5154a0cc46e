//! FADT: declares the platform hardware-reduced and names its sleep and reset registers.

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::layout;
use acpi_tables::fadt::{FADTBuilder, Flags, FADT};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};

/// IA-PC boot architecture flags (ACPI 6.5, table 5.11). `LEGACY_DEVICES` (bit 0) and `8042`
/// (bit 1) stay clear: there is no ISA/LPC bus and no PS/2 controller to probe. "VGA not present"
/// stops vgacon from poking 0xa0000/0x3c0 ports; "CMOS RTC not present" stops Linux from
/// registering the rtc_cmos platform device at port 0x70. "MSI not supported" (bit 3) is left
/// clear: it has no meaning without PCI, and a later PCI transport may want MSI.
pub(super) const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
pub(super) const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// FADT "Hypervisor Vendor Identity" (ACPI 6.0+).
pub(super) const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"VESSELVM";

/// The FADT for a machine whose DSDT is at `dsdt_addr`.
pub(super) fn fadt(dsdt_addr: u64) -> FADT {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // "Power/sleep button is a control method device, or absent": there is no fixed-feature
        // button in hardware-reduced ACPI, and Linux would otherwise register fixed button devices.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = (IAPC_BOOT_ARCH_VGA_NOT_PRESENT | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT).into();
    // Reboot: Linux's default reboot method (acpi_reboot) writes RESET_VALUE here.
    fadt.reset_reg = io_port_u8(layout::ACPI_RESET_PORT);
    fadt.reset_value = layout::ACPI_RESET_VALUE;
    // Poweroff: with HW_REDUCED_ACPI, ACPICA's acpi_hw_extended_sleep writes WAK_STS to the status
    // register, then SLP_TYP (from \_S5_) << 2 | SLP_EN to the control register.
    fadt.sleep_control_reg = io_port_u8(layout::ACPI_SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_port_u8(layout::ACPI_SLEEP_STATUS_PORT);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    fadt.finalize()
}

/// A byte-wide register in system I/O space.
fn io_port_u8(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}
