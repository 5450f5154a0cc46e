//! CPUID for each vCPU: what KVM supports, with the topology (N single-thread cores on one
//! socket), the vCPU's APIC id and the hypervisor bit filled in.
//!
//! KVM's supported list already carries its own leaves (0x4000_0000: "KVMKVMKVM", kvmclock and
//! the other paravirtual features), which is how the guest finds kvmclock.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;
const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const EDX_HTT: u32 = 1 << 28;
/// x2APIC topology level types (CPUID 0xb ECX[15:8]).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    #[error("Cannot build the CPUID table: {0}")]
    Build(String),
}

/// What this host's KVM can give a guest. KVM leaves the TSC-deadline timer out of its table
/// even when its in-kernel LAPIC emulates it (the capability says so); without the bit a Linux
/// guest programs its timer through the LAPIC's one-shot counter, a register write more per tick.
pub fn supported(kvm: &kvm_ioctls::Kvm) -> Result<CpuId, kvm_ioctls::Error> {
    let mut table = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)?;
    if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
        for entry in table.as_mut_slice() {
            if entry.function == LEAF_FEATURES {
                entry.ecx |= ECX_TSC_DEADLINE;
            }
        }
    }
    Ok(table)
}

/// Bits needed to number `count` cores (the APIC-id shift of the core level).
fn id_bits(count: u8) -> u32 {
    u32::from(count).next_power_of_two().trailing_zeros()
}

fn is_amd(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .any(|e| e.function == 0 && e.ebx == u32::from_le_bytes(*b"Auth"))
}

/// The topology leaf (0xb or 0x1f) as seen by vCPU `apic_id` of `count`.
fn topology_leaf(function: u32, apic_id: u8, count: u8) -> Vec<kvm_cpuid_entry2> {
    let level = |index: u32, eax: u32, ebx: u32, level_type: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx: (level_type << 8) | index,
        edx: u32::from(apic_id),
        ..Default::default()
    };
    vec![
        level(0, 0, 1, LEVEL_SMT),
        level(1, id_bits(count), u32::from(count), LEVEL_CORE),
        level(2, 0, 0, 0),
    ]
}

/// The CPUID table for vCPU `apic_id` of `count`, from KVM's supported table.
pub fn vcpu_cpuid(supported: &CpuId, apic_id: u8, count: u8) -> Result<CpuId, CpuidError> {
    let amd = is_amd(supported.as_slice());
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .filter(|e| e.function != LEAF_TOPOLOGY && e.function != LEAF_TOPOLOGY_V2)
        .copied()
        .collect();
    let has_v2_topology = supported
        .as_slice()
        .iter()
        .any(|e| e.function == LEAF_TOPOLOGY_V2);
    for entry in &mut entries {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0xffff) | (u32::from(apic_id) << 24) | (u32::from(count) << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS if !amd => {
                let cache_level = (entry.eax >> 5) & 0x7;
                // Cores per package; L3 is shared by every core, L1 and L2 are each core's own.
                let sharing = if cache_level >= 3 { u32::from(count) - 1 } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | ((u32::from(count) - 1) << 26);
            }
            LEAF_AMD_SIZES if amd => {
                entry.ecx = (entry.ecx & !0xf0ff) | (id_bits(count) << 12) | (u32::from(count) - 1);
            }
            LEAF_AMD_TOPOLOGY if amd => {
                (entry.eax, entry.ebx, entry.ecx) = (u32::from(apic_id), u32::from(apic_id), 0);
            }
            _ => {}
        }
    }
    entries.extend(topology_leaf(LEAF_TOPOLOGY, apic_id, count));
    if has_v2_topology {
        entries.extend(topology_leaf(LEAF_TOPOLOGY_V2, apic_id, count));
    }
    CpuId::from_entries(&entries).map_err(|e| CpuidError::Build(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn topology_and_apic_id_follow_the_vcpu() {
        let intel = CpuId::from_entries(&[
            entry(0, 0, 0x1f, u32::from_le_bytes(*b"Genu"), 0, 0),
            entry(1, 0, 0x806f8, 0x0010_0800, 0, 0),
            entry(4, 0, (1 << 5) | 0x1, 0, 0, 0),
            entry(4, 3, (3 << 5) | 0x3, 0, 0, 0),
            entry(0xb, 0, 1, 2, 0x100, 9),
        ])
        .unwrap();
        let cpuid = vcpu_cpuid(&intel, 2, 3).unwrap();
        let find = |f: u32, i: u32| {
            *cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == f && e.index == i)
                .unwrap()
        };
        let features = find(1, 0);
        assert_eq!(features.ebx >> 24, 2);
        assert_eq!((features.ebx >> 16) & 0xff, 3);
        assert_eq!(features.ebx & 0xffff, 0x0800);
        assert_ne!(features.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(features.edx & EDX_HTT, 0);
        assert_eq!(find(4, 0).eax >> 26, 2);
        assert_eq!((find(4, 3).eax >> 14) & 0xfff, 2);
        let core = find(0xb, 1);
        assert_eq!(
            (core.eax, core.ebx, core.ecx >> 8, core.edx),
            (2, 3, LEVEL_CORE, 2)
        );
        assert_eq!(cpuid.as_slice().iter().filter(|e| e.function == 0xb).count(), 3);
    }

    #[test]
    fn amd_leaves_count_cores() {
        let amd = CpuId::from_entries(&[
            entry(0, 0, 0x10, u32::from_le_bytes(*b"Auth"), 0, 0),
            entry(0x8000_0008, 0, 0x3030, 0, 0, 0),
            entry(0x8000_001e, 0, 0, 0, 0, 0),
        ])
        .unwrap();
        let cpuid = vcpu_cpuid(&amd, 1, 2).unwrap();
        let sizes = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 0x8000_0008)
            .unwrap();
        assert_eq!((sizes.ecx & 0xff, (sizes.ecx >> 12) & 0xf), (1, 1));
        let topo = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 0x8000_001e)
            .unwrap();
        assert_eq!(topo.eax, 1);
    }
}
