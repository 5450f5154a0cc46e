//! vessel-vmm: a KVM microVM monitor, one process per VM.
//!
//! See DESIGN.md for how the pieces fit: configuration, KVM set-up, guest memory, kernel loading,
//! ACPI tables, devices on the port-I/O and MMIO buses, and one thread per vCPU.

pub mod acpi;
pub mod api;
pub mod arch;
pub mod config;
pub mod devices;
pub mod exit;
pub mod handmade;
pub mod jail;
pub mod kvm;
pub mod launch;
pub mod memory;
pub mod seccomp;
pub mod snapshot;
pub mod vcpu;
pub mod vm;

/// Guest RAM as the rust-vmm crates see it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
