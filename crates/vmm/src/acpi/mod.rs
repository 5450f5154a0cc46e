//! ACPI tables that describe the machine to the guest.
//!
//! Why ACPI at all: Debian's stock kernels (linux-image-amd64, -cloud-amd64) are built without
//! `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`, so `virtio_mmio.device=` on the command line does nothing.
//! What they do have is the ACPI binding of the virtio-mmio driver (`_HID "LNRO0005"`), which is how
//! QEMU's `-M microvm,acpi=on` and Firecracker announce their devices. The same tables give the guest
//! its CPUs and interrupt controllers (MADT) and a way to power off and reboot (FADT registers).
//!
//! The machine is "hardware-reduced" ACPI (FADT flag `HW_REDUCED_ACPI`): no PM1/GPE blocks, no SCI,
//! no FACS, no PM timer. Linux then also skips the legacy PIC and the PIT/HPET timer set-up, so the
//! MADT needs no interrupt source overrides. What remains for the VMM to emulate are three byte-wide
//! I/O ports: sleep control (the guest writes `SLP_TYP << 2 | SLP_EN (0x20)` there to power off),
//! sleep status (it writes `WAK_STS (0x80)` there first) and reset (`ACPI_RESET_VALUE`); and, for
//! events the VMM sends the guest (the power button), a Generic Event Device with its own
//! interrupt and status port (`devices/ged.rs`).
//!
//! Layout in guest memory, from [`layout::ACPI_RSDP_ADDR`] up to [`layout::ACPI_TABLES_END`]:
//! RSDP, XSDT, FADT, MADT, DSDT, each 16-byte aligned. The RSDP sits in the BIOS read-only area
//! (0xe0000..0x100000) that Linux scans for `"RSD PTR "`, so it is found even when the boot protocol
//! does not pass its address; pass it anyway (PVH `rsdp_paddr` / `boot_params.acpi_rsdp_addr`).
//!
//! Tables are built with the `acpi_tables` crate (rust-vmm); this module only decides their content
//! and placement.

mod dsdt;
mod fadt;
mod madt;
#[cfg(test)]
mod tests;

use crate::arch::layout;
use crate::GuestMemory;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use kvm_bindings::KVM_IOAPIC_NUM_PINS;
use vm_memory::{Bytes, GuestAddress};

/// OEM fields of every table header.
const OEM_ID: [u8; 6] = *b"VESSEL";
const OEM_TABLE_ID: [u8; 8] = *b"VESSELVM";
const OEM_REVISION: u32 = 1;

/// Tables start on 16-byte boundaries: the RSDP must (the guest's scan steps by 16), the others
/// need only natural alignment but gain nothing from being packed tighter.
const TABLE_ALIGN: u64 = 16;

/// One virtio-mmio device as the guest should see it: its register window and its interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmioWindow {
    /// Guest-physical address of the device's registers (below 4 GiB).
    pub base: u64,
    /// Length of the register window in bytes.
    pub size: u64,
    /// The IOAPIC pin (GSI) the device's edge-triggered interrupt arrives on.
    pub gsi: u32,
}

impl VirtioMmioWindow {
    /// Device `index` at its place in the guest layout ([`layout::virtio_mmio_window`]).
    pub fn at_layout_index(index: u32) -> Self {
        let (base, gsi) = layout::virtio_mmio_window(index);
        VirtioMmioWindow {
            base,
            size: layout::VIRTIO_MMIO_SIZE,
            gsi,
        }
    }
}

/// What the ACPI tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiMachine {
    /// Number of vCPUs; vCPU `i` has local APIC id `i`.
    pub vcpus: u8,
    /// The virtio-mmio devices, in the order of their `_UID`s.
    pub virtio_mmio: Vec<VirtioMmioWindow>,
    /// Whether COM1 (port [`layout::COM1_PORT`], GSI [`layout::COM1_GSI`]) exists.
    pub serial: bool,
    /// Whether the ACPI event device (status port [`layout::ACPI_GED_STATUS_PORT`], GSI
    /// [`layout::ACPI_GED_GSI`]) and the power button it notifies exist.
    pub power_button: bool,
}

/// Why the tables could not be written: a machine they cannot describe, or guest memory.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("The ACPI tables need at least one vCPU to describe")]
    NoVcpus,
    #[error(
        "virtio-mmio device {index}: window {base:#x}+{size:#x} is not within the low 4 GiB, \
         which the Memory32Fixed descriptor of its _CRS requires"
    )]
    WindowAbove4G { index: usize, base: u64, size: u64 },
    #[error(
        "virtio-mmio device {index}: GSI {gsi} is past the IOAPIC's last pin ({})",
        KVM_IOAPIC_NUM_PINS - 1
    )]
    GsiOutOfRange { index: usize, gsi: u32 },
    #[error("virtio-mmio device {index}: GSI {gsi} is already used by {other}")]
    GsiInUse { index: usize, gsi: u32, other: String },
    #[error("The ACPI tables would end at {end:#x}, past the end of their area at {limit:#x}")]
    TooLarge { end: u64, limit: u64 },
    #[error("Cannot write the ACPI {table} to guest memory at {addr:#x}: {source}")]
    GuestMemory {
        table: &'static str,
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
}

/// Writes RSDP, XSDT, FADT, MADT and DSDT for `machine` into `mem` and returns the RSDP's address.
pub fn write_acpi_tables(mem: &GuestMemory, machine: &AcpiMachine) -> Result<u64, AcpiError> {
    let (rsdp_addr, tables) = build_tables(machine)?;
    for table in &tables {
        mem.write_slice(&table.bytes, GuestAddress(table.addr))
            .map_err(|source| AcpiError::GuestMemory {
                table: table.name,
                addr: table.addr,
                source,
            })?;
    }
    Ok(rsdp_addr)
}

/// One table's bytes and where they go.
struct PlacedTable {
    name: &'static str,
    addr: u64,
    bytes: Vec<u8>,
}

/// Builds every table and gives each its guest address. Pointers between tables are absolute
/// guest-physical addresses, so tables are placed before the tables that point to them are built.
/// Returns the RSDP's address and the tables.
fn build_tables(machine: &AcpiMachine) -> Result<(u64, Vec<PlacedTable>), AcpiError> {
    validate(machine)?;
    let dsdt = dsdt::dsdt(machine);
    let madt = madt::madt(machine.vcpus);

    let mut area = Area::new(layout::ACPI_RSDP_ADDR, layout::ACPI_TABLES_END);
    let rsdp_addr = area.place(Rsdp::len())?;
    // The XSDT lists FADT and MADT (the DSDT is reached through the FADT's X_DSDT).
    let xsdt_addr = area.place(XSDT_LEN)?;
    let fadt_addr = area.place(acpi_tables::fadt::FADT::len())?;
    let madt_addr = area.place(madt.len())?;
    let dsdt_addr = area.place(dsdt.len())?;

    let fadt = to_bytes(&fadt::fadt(dsdt_addr));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = to_bytes(&xsdt);
    debug_assert_eq!(xsdt.len(), XSDT_LEN);
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));

    let tables = vec![
        PlacedTable {
            name: "RSDP",
            addr: rsdp_addr,
            bytes: rsdp,
        },
        PlacedTable {
            name: "XSDT",
            addr: xsdt_addr,
            bytes: xsdt,
        },
        PlacedTable {
            name: "FADT",
            addr: fadt_addr,
            bytes: fadt,
        },
        PlacedTable {
            name: "MADT",
            addr: madt_addr,
            bytes: madt,
        },
        PlacedTable {
            name: "DSDT",
            addr: dsdt_addr,
            bytes: dsdt,
        },
    ];
    Ok((rsdp_addr, tables))
}

/// Header plus two 64-bit entries.
const XSDT_LEN: usize = 36 + 2 * 8;

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// Rejects what the tables cannot describe, or what would give the guest two devices on one line.
fn validate(machine: &AcpiMachine) -> Result<(), AcpiError> {
    if machine.vcpus == 0 {
        return Err(AcpiError::NoVcpus);
    }
    let mut users: Vec<(u32, String)> = Vec::new();
    if machine.serial {
        users.push((layout::COM1_GSI, "COM1".to_string()));
    }
    if machine.power_button {
        users.push((layout::ACPI_GED_GSI, "the ACPI event device".to_string()));
    }
    for (index, window) in machine.virtio_mmio.iter().enumerate() {
        let fits_32 = window.size <= u64::from(u32::MAX)
            && window
                .base
                .checked_add(window.size)
                .is_some_and(|end| end <= 1 << 32);
        if !fits_32 {
            return Err(AcpiError::WindowAbove4G {
                index,
                base: window.base,
                size: window.size,
            });
        }
        // The MADT's single IOAPIC (GSI base 0) has KVM's pin count; any other GSI reaches nothing.
        if window.gsi >= KVM_IOAPIC_NUM_PINS {
            return Err(AcpiError::GsiOutOfRange {
                index,
                gsi: window.gsi,
            });
        }
        // Interrupts are exclusive (edge-triggered, not shareable).
        if let Some((_, other)) = users.iter().find(|(gsi, _)| *gsi == window.gsi) {
            return Err(AcpiError::GsiInUse {
                index,
                gsi: window.gsi,
                other: other.clone(),
            });
        }
        users.push((window.gsi, format!("virtio-mmio device {index}")));
    }
    Ok(())
}

/// Hands out consecutive, aligned addresses in `[next, end)`.
struct Area {
    next: u64,
    end: u64,
}

impl Area {
    fn new(start: u64, end: u64) -> Self {
        Area { next: start, end }
    }

    fn place(&mut self, len: usize) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(TABLE_ALIGN);
        let end = addr + len as u64;
        if end > self.end {
            return Err(AcpiError::TooLarge { end, limit: self.end });
        }
        self.next = end;
        Ok(addr)
    }
}
