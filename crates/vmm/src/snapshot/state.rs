//! The machine state a snapshot holds besides memory: every vCPU's registers and the VM-wide
//! KVM state (IRQ chip, PIT, clock), captured and put back with KVM's get/set ioctls.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("Cannot {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("KVM restored {set} of the snapshot's {saved} MSRs")]
    Msrs { set: usize, saved: usize },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> StateError {
    move |source| StateError::Kvm { what, source }
}

/// One vCPU, as KVM describes it.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// `kvm_fpu` has no serde form; its bytes (a plain C struct) stand in.
    pub fpu: Vec<u8>,
    pub xsave: Option<kvm_xsave>,
    pub xcrs: Option<kvm_xcrs>,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
}

/// Whether this vCPU lets KVM read MSR `index` (KVM lists some a given CPU model lacks).
pub fn msr_readable(vcpu: &VcpuFd, index: u32) -> bool {
    let Ok(mut one) = Msrs::from_entries(&[kvm_msr_entry {
        index,
        ..Default::default()
    }]) else {
        return false;
    };
    matches!(vcpu.get_msrs(&mut one), Ok(1))
}

/// The MSRs KVM saves and restores.
pub fn msr_list(kvm: &Kvm) -> Result<Vec<u32>, StateError> {
    Ok(kvm
        .get_msr_index_list()
        .map_err(kvm_err("list the MSRs KVM saves"))?
        .as_slice()
        .to_vec())
}

fn fpu_bytes(fpu: &kvm_fpu) -> Vec<u8> {
    // SAFETY: kvm_fpu is a plain C struct of integers and arrays; reading its bytes is sound.
    unsafe {
        std::slice::from_raw_parts(
            (fpu as *const kvm_fpu).cast::<u8>(),
            std::mem::size_of::<kvm_fpu>(),
        )
    }
    .to_vec()
}

fn fpu_from_bytes(bytes: &[u8]) -> Result<kvm_fpu, StateError> {
    if bytes.len() != std::mem::size_of::<kvm_fpu>() {
        return Err(StateError::Kvm {
            what: "read the saved FPU",
            source: kvm_ioctls::Error::new(libc::EINVAL),
        });
    }
    // SAFETY: the length matches and every bit pattern is a valid kvm_fpu (integers only);
    // read_unaligned copes with the Vec's alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<kvm_fpu>()) })
}

impl VcpuState {
    /// Reads the state of a vCPU that is out of KVM_RUN (paused, or not started).
    pub fn capture(vcpu: &VcpuFd, msr_indices: &[u32]) -> Result<Self, StateError> {
        let entries: Vec<kvm_msr_entry> = msr_indices
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| StateError::Msrs {
            set: 0,
            saved: entries.len(),
        })?;
        let read = vcpu.get_msrs(&mut msrs).map_err(kvm_err("read MSRs"))?;
        if read != entries.len() {
            return Err(StateError::Msrs {
                set: read,
                saved: entries.len(),
            });
        }
        Ok(Self {
            cpuid: vcpu
                .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
                .map_err(kvm_err("read CPUID"))?
                .as_slice()
                .to_vec(),
            mp_state: vcpu.get_mp_state().map_err(kvm_err("read the MP state"))?,
            regs: vcpu.get_regs().map_err(kvm_err("read registers"))?,
            sregs: vcpu.get_sregs().map_err(kvm_err("read special registers"))?,
            fpu: fpu_bytes(&vcpu.get_fpu().map_err(kvm_err("read the FPU"))?),
            // Hosts without XSAVE (or KVMs that do not expose it) still snapshot the FPU above.
            xsave: vcpu.get_xsave().ok(),
            xcrs: vcpu.get_xcrs().ok(),
            debugregs: vcpu.get_debug_regs().map_err(kvm_err("read debug registers"))?,
            lapic: vcpu.get_lapic().map_err(kvm_err("read the local APIC"))?,
            msrs: msrs.as_slice().to_vec(),
            events: vcpu
                .get_vcpu_events()
                .map_err(kvm_err("read pending vCPU events"))?,
        })
    }

    /// Puts the state back, in the order KVM needs: CPUID first (it decides which MSRs and
    /// XSAVE features exist), events last (they may reference the restored registers).
    pub fn apply(&self, vcpu: &VcpuFd) -> Result<(), StateError> {
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|_| StateError::Kvm {
            what: "rebuild the saved CPUID",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
        vcpu.set_mp_state(self.mp_state)
            .map_err(kvm_err("set the MP state"))?;
        vcpu.set_regs(&self.regs).map_err(kvm_err("set registers"))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(kvm_err("set special registers"))?;
        vcpu.set_fpu(&fpu_from_bytes(&self.fpu)?)
            .map_err(kvm_err("set the FPU"))?;
        if let Some(xsave) = &self.xsave {
            // SAFETY: the buffer is a whole kvm_xsave read from KVM by `capture`.
            unsafe { vcpu.set_xsave(xsave) }.map_err(kvm_err("set XSAVE state"))?;
        }
        if let Some(xcrs) = &self.xcrs {
            vcpu.set_xcrs(xcrs).map_err(kvm_err("set XCRs"))?;
        }
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(kvm_err("set debug registers"))?;
        vcpu.set_lapic(&self.lapic)
            .map_err(kvm_err("set the local APIC"))?;
        let msrs = Msrs::from_entries(&self.msrs).map_err(|_| StateError::Msrs {
            set: 0,
            saved: self.msrs.len(),
        })?;
        let set = vcpu.set_msrs(&msrs).map_err(kvm_err("set MSRs"))?;
        if set != self.msrs.len() {
            return Err(StateError::Msrs {
                set,
                saved: self.msrs.len(),
            });
        }
        vcpu.set_vcpu_events(&self.events)
            .map_err(kvm_err("set pending vCPU events"))
    }
}

/// The VM-wide interrupt controllers and timers.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, StateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip).map_err(kvm_err("read the IRQ chip"))?;
    Ok(chip)
}

impl VmState {
    pub fn capture(vm: &VmFd) -> Result<Self, StateError> {
        Ok(Self {
            pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit: vm.get_pit2().map_err(kvm_err("read the PIT"))?,
            clock: vm.get_clock().map_err(kvm_err("read the KVM clock"))?,
        })
    }

    pub fn apply(&self, vm: &VmFd) -> Result<(), StateError> {
        for chip in [&self.pic_master, &self.pic_slave, &self.ioapic] {
            vm.set_irqchip(chip).map_err(kvm_err("set the IRQ chip"))?;
        }
        vm.set_pit2(&self.pit).map_err(kvm_err("set the PIT"))?;
        // Only the clock value carries over; the flags describe the old host's TSC.
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            ..Default::default()
        };
        vm.set_clock(&clock).map_err(kvm_err("set the KVM clock"))
    }
}
