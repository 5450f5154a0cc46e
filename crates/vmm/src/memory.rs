//! Guest RAM: anonymous host mappings laid out around the MMIO hole below 4 GiB.

use crate::arch::layout::{MMIO_GAP_END, MMIO_GAP_START};
use crate::GuestMemory;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Smallest guest a Linux kernel can decompress and run in.
pub const MIN_LINUX_MIB: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("Guest memory of {0} MiB is too small: a Linux guest needs at least {MIN_LINUX_MIB} MiB")]
    TooSmall(u64),
    #[error("Guest memory of {requested} MiB exceeds this host's {host} MiB of RAM")]
    MoreThanHost { requested: u64, host: u64 },
    #[error("Cannot map {mib} MiB of guest memory: {source}")]
    Map {
        mib: u64,
        source: vm_memory::mmap::FromRangesError,
    },
}

/// The guest-physical RAM ranges for `bytes` of memory: below the MMIO hole, then above 4 GiB.
pub fn ram_ranges(bytes: u64) -> Vec<(GuestAddress, usize)> {
    if bytes <= MMIO_GAP_START {
        vec![(GuestAddress(0), bytes as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (bytes - MMIO_GAP_START) as usize),
        ]
    }
}

/// Maps `mib` MiB of guest RAM. Pages are reserved lazily by the host: an idle guest costs only
/// what it touches.
pub fn create(mib: u64, min_mib: u64) -> Result<GuestMemory, MemoryError> {
    if mib < min_mib {
        return Err(MemoryError::TooSmall(mib));
    }
    let host = host_ram_mib();
    if host > 0 && mib > host {
        return Err(MemoryError::MoreThanHost { requested: mib, host });
    }
    GuestMemory::from_ranges(&ram_ranges(mib << 20)).map_err(|source| MemoryError::Map { mib, source })
}

/// Total guest RAM in bytes.
pub fn total_bytes(mem: &GuestMemory) -> u64 {
    mem.iter().map(|region| region.len()).sum()
}

fn host_ram_mib() -> u64 {
    // SAFETY: sysconf only reads configuration values.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if pages <= 0 || page_size <= 0 {
        return 0;
    }
    (pages as u64 * page_size as u64) >> 20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_hole() {
        assert_eq!(ram_ranges(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        let big = ram_ranges(4 << 30);
        assert_eq!(big[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(
            big[1],
            (
                GuestAddress(MMIO_GAP_END),
                ((4u64 << 30) - MMIO_GAP_START) as usize
            )
        );
    }

    #[test]
    fn refuses_too_little_and_too_much() {
        assert!(matches!(create(8, MIN_LINUX_MIB), Err(MemoryError::TooSmall(8))));
        assert!(matches!(
            create(1 << 40, MIN_LINUX_MIB),
            Err(MemoryError::MoreThanHost { .. })
        ));
        let mem = create(64, MIN_LINUX_MIB).unwrap();
        assert_eq!(total_bytes(&mem), 64 << 20);
    }
}
