//! vessel-vmm: a KVM microVM monitor, one process per VM.
//!
//! See DESIGN.md for how the pieces fit: configuration, KVM set-up, guest memory, kernel loading,
//! ACPI tables, devices on the port-I/O and MMIO buses, and one thread per vCPU.

pub mod acpi;
pub mod arch;
pub mod devices;

/// Guest RAM as the rust-vmm crates see it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
