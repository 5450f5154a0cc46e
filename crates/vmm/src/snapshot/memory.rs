//! Guest memory in a snapshot file: written sparsely (pages of zeros stay holes, so untouched
//! memory costs neither disk nor time) and mapped back privately, so a restore reads only the
//! pages the guest touches, when it touches them, and never writes the file.

use crate::GuestMemory;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use vm_memory::mmap::{GuestRegionMmap, MmapRegionBuilder};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

const PAGE: usize = 4096;

/// Where one guest RAM range lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRecord {
    pub guest_addr: u64,
    pub len: u64,
    pub file_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotMemoryError {
    #[error("Cannot write guest memory to the snapshot: {0}")]
    Write(std::io::Error),
    #[error("Cannot map the snapshot's guest memory: {0}")]
    Map(String),
}

/// The file layout for `mem`'s regions, back to back from `offset`.
pub fn layout(mem: &GuestMemory, offset: u64) -> Vec<RegionRecord> {
    let mut next = offset;
    mem.iter()
        .map(|region| {
            let record = RegionRecord {
                guest_addr: region.start_addr().0,
                len: region.len(),
                file_offset: next,
            };
            next += region.len();
            record
        })
        .collect()
}

/// Writes every page that is not all zeros, in runs; zero pages stay holes in the file
/// (which the caller sized beforehand). Returns the bytes written.
pub fn write_sparse(
    file: &File,
    mem: &GuestMemory,
    records: &[RegionRecord],
) -> Result<u64, SnapshotMemoryError> {
    let mut written = 0;
    for record in records {
        let host = mem
            .get_host_address(GuestAddress(record.guest_addr))
            .map_err(|e| SnapshotMemoryError::Write(std::io::Error::other(e.to_string())))?;
        // SAFETY: the region is a live mapping of `record.len` bytes owned by `mem`, and every
        // vCPU is parked (the caller paused the VM), so nothing writes it while we read.
        let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, record.len as usize) };
        let untouched = mem
            .find_region(GuestAddress(record.guest_addr))
            .filter(|region| is_private_anonymous(region))
            .and_then(|_| untouched_pages(host as usize, bytes.len().div_ceil(PAGE)));
        let mut run_start = None;
        for (index, page) in bytes.chunks(PAGE).enumerate() {
            // A page never touched is zero without being read (reading it would fault it in).
            let zero = untouched.as_ref().is_some_and(|u| u[index]) || page.iter().all(|&b| b == 0);
            match (zero, run_start) {
                (false, None) => run_start = Some(index),
                (true, Some(start)) => {
                    written += write_run(file, bytes, record.file_offset, start, index)?;
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            written += write_run(file, bytes, record.file_offset, start, bytes.len().div_ceil(PAGE))?;
        }
    }
    Ok(written)
}

/// Guest RAM the VMM allocated (not a restored VM's file mapping, whose pages come from the file).
fn is_private_anonymous(region: &GuestRegionMmap) -> bool {
    region.file_offset().is_none() && region.flags() & libc::MAP_PRIVATE != 0
}

/// For each of `pages` pages from `host`, whether it was never touched: neither present nor
/// swapped out in /proc/self/pagemap. Such a page of a private anonymous mapping reads as zeros.
/// None when the pagemap cannot be read (no /proc, as in a jail without it): every page is read.
fn untouched_pages(host: usize, pages: usize) -> Option<Vec<bool>> {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    let pagemap = File::open("/proc/self/pagemap").ok()?;
    let mut entries = vec![0u8; pages * 8];
    pagemap
        .read_exact_at(&mut entries, (host / PAGE * 8) as u64)
        .ok()?;
    Some(
        entries
            .chunks_exact(8)
            .map(|e| u64::from_ne_bytes(e.try_into().unwrap_or_default()) & (PRESENT | SWAPPED) == 0)
            .collect(),
    )
}

fn write_run(
    file: &File,
    bytes: &[u8],
    base: u64,
    first: usize,
    end: usize,
) -> Result<u64, SnapshotMemoryError> {
    let run = &bytes[first * PAGE..(end * PAGE).min(bytes.len())];
    file.write_all_at(run, base + (first * PAGE) as u64)
        .map_err(SnapshotMemoryError::Write)?;
    Ok(run.len() as u64)
}

/// Maps the recorded regions from `file`, copy-on-write: the guest's writes stay in this process.
pub fn map_private(file: &File, records: &[RegionRecord]) -> Result<GuestMemory, SnapshotMemoryError> {
    let map_err = |e: &dyn std::fmt::Display| SnapshotMemoryError::Map(e.to_string());
    let mut regions = Vec::with_capacity(records.len());
    for record in records {
        let file = file.try_clone().map_err(|e| map_err(&e))?;
        let mapping = MmapRegionBuilder::new(record.len as usize)
            .with_file_offset(FileOffset::from_arc(Arc::new(file), record.file_offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| map_err(&e))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(record.guest_addr))
            .ok_or_else(|| SnapshotMemoryError::Map("a region wraps around the address space".into()))?;
        regions.push(region);
    }
    GuestMemory::from_regions(regions).map_err(|e| map_err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn written_pages_land_in_the_file_and_untouched_ones_are_never_read() {
        let mem = crate::memory::create(16, 1).unwrap();
        let touched = [(0x0u64, 0x11u8), (0x5000, 0x22), (0xa0_0000, 0x33)];
        for (addr, byte) in touched {
            mem.write_slice(&[byte; 100], GuestAddress(addr)).unwrap();
        }
        // A page read but never written maps the zero page: present, all zeros, left a hole.
        let mut read = [1u8; 8];
        mem.read_slice(&mut read, GuestAddress(0x7000)).unwrap();
        assert_eq!(read, [0; 8]);

        let path = std::env::temp_dir().join(format!("vessel-sparse-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let records = layout(&mem, 0);
        let total: u64 = records.iter().map(|r| r.len).sum();
        file.set_len(total).unwrap();
        let written = write_sparse(&file, &mem, &records).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(written, 3 * PAGE as u64, "only the three written pages");
        for (addr, byte) in touched {
            let mut back = [0u8; 100];
            file.read_exact_at(&mut back, addr).unwrap();
            assert_eq!(back, [byte; 100], "page at {addr:#x}");
        }
        // The scan did not fault in the pages nobody touched.
        let host = mem.get_host_address(GuestAddress(0x10_0000)).unwrap() as usize;
        let untouched = untouched_pages(host, 16).expect("this process's pagemap");
        assert!(untouched.iter().all(|&u| u), "{untouched:?}");
    }
}
