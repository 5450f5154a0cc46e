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
        let mut run_start = None;
        for (index, page) in bytes.chunks(PAGE).enumerate() {
            let zero = page.iter().all(|&b| b == 0);
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
