//! x86-64 platform set-up: memory layout, boot structures, vCPU registers and CPUID.

pub mod layout;
