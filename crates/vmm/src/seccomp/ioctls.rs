//! The ioctl request numbers the filters name, computed like the kernel's `_IO*` macros from
//! the structures kvm-bindings defines (so a structure's size is never typed by hand).

use kvm_bindings::*;
use std::mem::size_of;
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

const KVMIO: u32 = 0xae;

const fn io(nr: u32) -> u64 {
    ioctl_expr(_IOC_NONE, KVMIO, nr, 0) as u64
}

const fn ior(nr: u32, size: usize) -> u64 {
    ioctl_expr(_IOC_READ, KVMIO, nr, size as u32) as u64
}

const fn iowr(nr: u32, size: usize) -> u64 {
    ioctl_expr(_IOC_READ | _IOC_WRITE, KVMIO, nr, size as u32) as u64
}

/// The type byte of every KVM ioctl (bits 8..16 of the request), for "any KVM ioctl" rules.
pub const KVM_TYPE: u64 = (KVMIO as u64) << 8;
pub const TYPE_MASK: u32 = 0xff00;

/// What a vCPU thread asks of its own vCPU: run it, tell kvmclock about a pause, and read its
/// state when a snapshot is taken (the parked vCPU saves itself).
pub const VCPU: &[(&str, u64)] = &[
    ("KVM_RUN", io(0x80)),
    ("KVM_KVMCLOCK_CTRL", io(0xad)),
    ("KVM_CHECK_EXTENSION", io(0x03)),
    ("KVM_GET_TSC_KHZ", io(0xa3)),
    ("KVM_GET_REGS", ior(0x81, size_of::<kvm_regs>())),
    ("KVM_GET_SREGS", ior(0x83, size_of::<kvm_sregs>())),
    ("KVM_GET_FPU", ior(0x8c, size_of::<kvm_fpu>())),
    ("KVM_GET_LAPIC", ior(0x8e, size_of::<kvm_lapic_state>())),
    ("KVM_GET_MP_STATE", ior(0x98, size_of::<kvm_mp_state>())),
    ("KVM_GET_VCPU_EVENTS", ior(0x9f, size_of::<kvm_vcpu_events>())),
    ("KVM_GET_DEBUGREGS", ior(0xa1, size_of::<kvm_debugregs>())),
    ("KVM_GET_XSAVE", ior(0xa4, size_of::<kvm_xsave>())),
    ("KVM_GET_XCRS", ior(0xa6, size_of::<kvm_xcrs>())),
    ("KVM_GET_XSAVE2", ior(0xcf, size_of::<kvm_xsave>())),
    ("KVM_GET_MSRS", iowr(0x88, size_of::<kvm_msrs>())),
    ("KVM_GET_CPUID2", iowr(0x91, size_of::<kvm_cpuid2>())),
];

/// Device work on descriptors: non-blocking mode, close-on-exec, tap offloads and header size
/// (set when the guest's driver negotiates them).
pub const DEVICE: &[(&str, u64)] = &[
    ("FIONBIO", libc::FIONBIO),
    ("FIOCLEX", libc::FIOCLEX),
    ("TUNSETOFFLOAD", libc::TUNSETOFFLOAD),
    ("TUNSETVNETHDRSZ", libc::TUNSETVNETHDRSZ),
];

/// Building a VM beyond KVM: attaching a tap, and what the standard library asks of a terminal.
pub const BUILD: &[(&str, u64)] = &[
    ("TUNSETIFF", libc::TUNSETIFF),
    ("TUNGETIFF", libc::TUNGETIFF),
    ("TCGETS", libc::TCGETS),
    ("TIOCGWINSZ", libc::TIOCGWINSZ),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers strace showed for these requests on x86-64.
    #[test]
    fn numbers_match_the_kernel_abi() {
        let find = |name: &str| VCPU.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(find("KVM_RUN"), 0xae80);
        assert_eq!(find("KVM_GET_REGS"), 0x8090_ae81);
        assert_eq!(find("KVM_GET_SREGS"), 0x8138_ae83);
        assert_eq!(find("KVM_GET_LAPIC"), 0x8400_ae8e);
        assert_eq!(find("KVM_GET_XSAVE"), 0x9000_aea4);
        assert_eq!(find("KVM_GET_MSRS"), 0xc008_ae88);
        assert_eq!(find("KVM_GET_CPUID2"), 0xc008_ae91);
        assert_eq!(DEVICE[2].1, 0x4004_54d0);
        assert_eq!(BUILD[0].1, 0x4004_54ca);
    }
}
