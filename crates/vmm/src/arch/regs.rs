//! The vCPU state at the first guest instruction: segments and paging for the entry mode,
//! general registers, FPU, boot MSRs and the local APIC's LINT pins.

use super::boot::EntryMode;
use super::layout::*;
use crate::GuestMemory;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("Cannot write the boot page tables or GDT to guest memory: {0}")]
    WriteGuest(vm_memory::GuestMemoryError),
    #[error("Cannot set vCPU {what}: {source}")]
    Set {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("Cannot read vCPU {what}: {source}")]
    Get {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("KVM accepted {set} of {wanted} boot MSRs")]
    Msrs { set: usize, wanted: usize },
}

// Control-register and EFER bits (Intel SDM vol. 3, 2.5 and 2.2.1).
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Page-table entry bits: present, writable, and (in a PD entry) a 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_HUGE: u64 = 0x80;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 0x2;

/// The code modes a vCPU can start in: the two Linux entries, and the modes that hand-made guests
/// (the native tests') are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    Kernel(EntryMode),
    /// 16-bit real mode, CS:IP = 0:entry.
    Real,
}

/// A GDT descriptor from its flags (access byte in bits 0–7, G/DB/L/AVL in bits 12–15), base and
/// limit, in the split layout the processor wants.
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The segment register KVM wants for GDT slot `index` holding `entry`.
fn segment(index: u16, entry: u64) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let granular = bit(55) == 1;
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if granular {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: 0,
        padding: 0,
    }
}

/// Sets segments, control registers and (for 64-bit) identity-mapped paging of the first 1 GiB.
fn setup_sregs(mem: &GuestMemory, sregs: &mut kvm_sregs, mode: StartMode) -> Result<(), RegsError> {
    if mode == StartMode::Real {
        // Reset state is real mode already; only make CS start at 0 so IP = entry is linear.
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        return Ok(());
    }
    let long = mode == StartMode::Kernel(EntryMode::Linux64);
    let code = if long {
        gdt_entry(0xa09b, 0, 0xfffff)
    } else {
        gdt_entry(0xc09b, 0, 0xfffff)
    };
    let gdt = [
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ];
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(RegsError::WriteGuest)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(RegsError::WriteGuest)?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    let data = segment(2, gdt[2]);
    sregs.cs = segment(1, gdt[1]);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = segment(3, gdt[3]);
    sregs.cr0 = CR0_PE | CR0_ET;
    if long {
        mem.write_obj(PDPTE_ADDR | PTE_PRESENT_RW, GuestAddress(PML4_ADDR))
            .map_err(RegsError::WriteGuest)?;
        mem.write_obj(PDE_ADDR | PTE_PRESENT_RW, GuestAddress(PDPTE_ADDR))
            .map_err(RegsError::WriteGuest)?;
        for i in 0..512u64 {
            let pde = (i << 21) | PTE_PRESENT_RW | PDE_HUGE;
            mem.write_obj(pde, GuestAddress(PDE_ADDR + i * 8))
                .map_err(RegsError::WriteGuest)?;
        }
        sregs.cr3 = PML4_ADDR;
        sregs.cr4 |= CR4_PAE;
        sregs.cr0 |= CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
    }
    Ok(())
}

/// Puts the vCPU at `entry` in `mode`, with the registers its boot protocol asks for.
pub fn setup_boot_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemory,
    entry: u64,
    mode: StartMode,
) -> Result<(), RegsError> {
    let mut sregs = vcpu.get_sregs().map_err(|source| RegsError::Get {
        what: "special registers",
        source,
    })?;
    setup_sregs(mem, &mut sregs, mode)?;
    vcpu.set_sregs(&sregs).map_err(|source| RegsError::Set {
        what: "special registers",
        source,
    })?;
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        ..Default::default()
    };
    match mode {
        StartMode::Kernel(EntryMode::Linux64) => {
            (regs.rsp, regs.rbp, regs.rsi) = (BOOT_STACK_ADDR, BOOT_STACK_ADDR, ZERO_PAGE_ADDR);
        }
        StartMode::Kernel(EntryMode::Pvh) => regs.rbx = PVH_INFO_ADDR,
        StartMode::Real => {}
    }
    vcpu.set_regs(&regs).map_err(|source| RegsError::Set {
        what: "registers",
        source,
    })
}

/// FPU control word and MXCSR as after FNINIT / reset, which the kernel expects.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|source| RegsError::Set { what: "FPU", source })
}

/// MSRs a firmware would leave defined: SYSENTER/SYSCALL targets cleared, fast strings on,
/// MTRRs enabled with write-back as the default memory type.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    const MSR_IA32_TSC: u32 = 0x10;
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    const MSR_STAR: u32 = 0xc000_0081;
    const MSR_LSTAR: u32 = 0xc000_0082;
    const MSR_CSTAR: u32 = 0xc000_0083;
    const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    const MISC_ENABLE_FAST_STRING: u64 = 1;
    const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;
    let wanted = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ];
    let entries: Vec<kvm_msr_entry> = wanted
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::Msrs {
        set: 0,
        wanted: wanted.len(),
    })?;
    let set = vcpu
        .set_msrs(&msrs)
        .map_err(|source| RegsError::Set { what: "MSRs", source })?;
    if set != wanted.len() {
        return Err(RegsError::Msrs {
            set,
            wanted: wanted.len(),
        });
    }
    Ok(())
}

/// Wires the local APIC's LINT0 to the PIC (ExtINT) and LINT1 to NMI, as a PC firmware does.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const DELIVERY_EXTINT: u32 = 0x7;
    const DELIVERY_NMI: u32 = 0x4;
    let mut lapic = vcpu.get_lapic().map_err(|source| RegsError::Get {
        what: "local APIC",
        source,
    })?;
    for (offset, mode) in [(APIC_LVT0, DELIVERY_EXTINT), (APIC_LVT1, DELIVERY_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, byte) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[offset + i] = *byte as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(|source| RegsError::Set {
        what: "local APIC",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_round_trip_into_segments() {
        let code = gdt_entry(0xa09b, 0, 0xfffff);
        assert_eq!(code, 0x00af_9b00_0000_ffff);
        let seg = segment(1, code);
        assert_eq!(
            (seg.selector, seg.type_, seg.l, seg.db, seg.g, seg.present),
            (8, 0xb, 1, 0, 1, 1)
        );
        assert_eq!(seg.limit, 0xffff_ffff);
        let data = segment(2, gdt_entry(0xc093, 0x1234_5678, 0xfffff));
        assert_eq!((data.base, data.db, data.type_, data.s), (0x1234_5678, 1, 3, 1));
        let tss = segment(3, gdt_entry(0x808b, 0, 0xfffff));
        assert_eq!((tss.s, tss.type_, tss.g), (0, 0xb, 1));
    }

    #[test]
    fn long_mode_identity_maps_the_first_gigabyte() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, &mut sregs, StartMode::Kernel(EntryMode::Linux64)).unwrap();
        assert_eq!(sregs.cr3, PML4_ADDR);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        let last: u64 = mem.read_obj(GuestAddress(PDE_ADDR + 511 * 8)).unwrap();
        assert_eq!(last, (511 << 21) | PTE_PRESENT_RW | PDE_HUGE);
        let mut pvh = kvm_sregs::default();
        setup_sregs(&mem, &mut pvh, StartMode::Kernel(EntryMode::Pvh)).unwrap();
        assert_eq!((pvh.cr0 & CR0_PG, pvh.efer, pvh.cs.db, pvh.cs.l), (0, 0, 1, 0));
    }
}
