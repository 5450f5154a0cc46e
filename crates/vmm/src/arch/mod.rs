//! x86-64 platform set-up: memory layout, boot structures, vCPU registers and CPUID.

pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod regs;
