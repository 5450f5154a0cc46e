//! Opening /dev/kvm with errors a user can act on, and telling PVM apart from hardware KVM.

use kvm_ioctls::{Cap, Kvm};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("/dev/kvm does not exist: load the kvm_intel or kvm_amd module (or enable virtualization in the host's firmware)")]
    Missing,
    #[error("Cannot open /dev/kvm: permission denied (run as root or join the kvm group)")]
    PermissionDenied,
    #[error("Cannot open /dev/kvm: {0}")]
    Open(std::io::Error),
    #[error("/dev/kvm speaks KVM API version {0}; vessel-vmm needs version 12")]
    ApiVersion(i32),
    #[error("/dev/kvm lacks {0:?}, which vessel-vmm needs")]
    MissingCapability(Cap),
}

/// The KVM flavour behind /dev/kvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Hardware virtualization (VT-x or SVM): any x86-64 kernel boots.
    Hardware,
    /// kvm-pvm, a paravirtual KVM without VT-x / SVM underneath: it runs hand-made guests at low
    /// addresses, but a Linux kernel must be built as a PVM guest to boot on it.
    Pvm,
}

impl Flavour {
    pub fn detect() -> Self {
        if Path::new("/sys/module/kvm_pvm").exists() {
            Flavour::Pvm
        } else {
            Flavour::Hardware
        }
    }
}

/// Explains PVM to a user whose stock kernel cannot boot here.
pub const PVM_EXPLANATION: &str = "/dev/kvm on this host is kvm-pvm (paravirtual KVM, no VT-x/SVM): \
     stock distribution kernels cannot boot on it, only kernels built as PVM guests \
     (pass --pvm-guest-kernel if yours is one); boot stock kernels on hardware KVM, e.g. in the nested lab (scripts/vmlab)";

/// Opens /dev/kvm and checks the capabilities the VMM relies on.
pub fn open() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENXIO | libc::ENODEV => KvmError::Missing,
        libc::EACCES | libc::EPERM => KvmError::PermissionDenied,
        _ => KvmError::Open(std::io::Error::from_raw_os_error(e.errno())),
    })?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(KvmError::ApiVersion(version));
    }
    for cap in [
        Cap::Irqchip,
        Cap::Irqfd,
        Cap::UserMemory,
        Cap::SetTssAddr,
        Cap::Pit2,
        Cap::ExtCpuid,
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCapability(cap));
        }
    }
    Ok(kvm)
}
