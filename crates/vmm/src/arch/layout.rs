//! Where things live in the guest's physical address space and I/O port space (x86-64).
//!
//! Low memory holds the boot structures, 0xe0000..0x100000 the ACPI tables, 1 MiB the kernel;
//! the 1 GiB below 4 GiB is a hole for device MMIO; RAM past that hole continues at 4 GiB.

/// The boot GDT (four entries: null, code, data, TSS).
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT: the guest installs its own before enabling interrupts.
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`, then its module list and memory map.
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
pub const PVH_MEMMAP_ADDR: u64 = 0x7000;
/// The Linux zero page (`boot_params`); not used with PVH, so it may share PVH's memmap page.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack for the 64-bit entry.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// Identity-mapping page tables for the first 1 GiB: PML4, PDPT, PD.
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPTE_ADDR: u64 = 0xa000;
pub const PDE_ADDR: u64 = 0xb000;
/// The kernel command line (up to `CMDLINE_MAX` bytes including the NUL).
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 0x10000;
/// End of conventional low memory usable by the guest (the EBDA follows).
pub const EBDA_ADDR: u64 = 0x9fc00;
/// ACPI tables: the RSDP where the BIOS search area begins, the other tables after it, up to
/// the reset vector.
pub const ACPI_RSDP_ADDR: u64 = 0xe0000;
pub const ACPI_TABLES_END: u64 = RESET_VECTOR_ADDR;
/// Where a PC's CPU starts after reset (F000:FFF0). Linux jumps here as its last way to reboot
/// ("BIOS" reboot, which it prefers on hardware-reduced ACPI without EFI); the VMM's stub there
/// turns the jump into a reset request.
pub const RESET_VECTOR_ADDR: u64 = 0xffff0;
/// End of the legacy BIOS area, reserved in the guest's memory map.
pub const BIOS_AREA_END: u64 = 0x100000;
/// Kernels load at 1 MiB and RAM above it is free for the guest.
pub const HIGH_MEMORY_ADDR: u64 = 0x100000;

/// The MMIO hole: guest RAM never covers `[MMIO_GAP_START, 4 GiB)`.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Virtio-mmio windows, one page each, announced to the guest through the ACPI DSDT.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The most virtio-mmio devices one VM gets (GSIs `VIRTIO_FIRST_GSI..` must stay below 24).
pub const VIRTIO_MAX_DEVICES: u32 = 18;
pub const VIRTIO_FIRST_GSI: u32 = 5;
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// KVM's TSS and identity-map pages (needed by VMX hosts) sit just below the IOAPIC.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// Legacy I/O ports.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_GSI: u32 = 4;
pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// ACPI hardware-reduced registers (FADT): sleep control and status, and the reset register.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
pub const ACPI_RESET_PORT: u16 = 0x602;
/// Value the guest writes to `ACPI_RESET_PORT` to reset.
pub const ACPI_RESET_VALUE: u8 = 0x0f;
/// SLP_TYP for S5 (soft off) announced in the DSDT's `\_S5` package.
pub const ACPI_S5_SLEEP_TYPE: u8 = 5;
/// The ACPI Generic Event Device (GED, `ACPI0013`): its event-status register (one byte, read
/// by the DSDT's `_EVT`; reading clears it) and its interrupt. GSI 23 is the IOAPIC's last pin,
/// free because the virtio GSIs end at `VIRTIO_FIRST_GSI + VIRTIO_MAX_DEVICES - 1` (22) and
/// COM1 has 4; it is not an ISA IRQ, so only the IOAPIC sees it.
pub const ACPI_GED_STATUS_PORT: u16 = 0x603;
pub const ACPI_GED_GSI: u32 = 23;
const _: () = assert!(VIRTIO_FIRST_GSI + VIRTIO_MAX_DEVICES <= ACPI_GED_GSI);
const _: () = assert!(ACPI_GED_GSI < kvm_bindings::KVM_IOAPIC_NUM_PINS);

/// The guest-physical window of virtio-mmio device `index` and its interrupt.
pub fn virtio_mmio_window(index: u32) -> (u64, u32) {
    (
        VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_SIZE,
        VIRTIO_FIRST_GSI + index,
    )
}
