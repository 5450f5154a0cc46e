//! One virtio-blk request: a 16-byte header the device reads, a data area, and a status byte
//! in the last writable byte of the chain (virtio 1.2 §5.2.6).
//!
//! The chain is read through virtio-queue's `Reader` (device-readable buffers only) and written
//! through its `Writer` (device-writable buffers only), both checked against guest memory when
//! built, so whatever the guest puts in its descriptors, I/O stays inside its own buffers.

use super::disk::{Disk, SECTOR_SIZE};
use crate::GuestMemory;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::{DescriptorChain, Reader, Writer};

/// Requests move through a bounce buffer of at most this many bytes at a time.
const CHUNK: usize = 256 * 1024;

/// Executes the request in `chain`; returns the bytes written into the chain (for the used ring).
pub(super) fn execute(
    disk: &Disk,
    buf: &mut Vec<u8>,
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
) -> u32 {
    let Ok(mut data_in) = Writer::new(mem, chain.clone()) else {
        return 0;
    };
    // No writable byte: there is nowhere to report status, so the chain just goes back.
    let Some(status_at) = data_in.available_bytes().checked_sub(1) else {
        return 0;
    };
    let Ok(mut status_out) = data_in.split_at(status_at) else {
        return 0;
    };
    let status = match Reader::new(mem, chain) {
        Ok(mut reader) => run(disk, buf, &mut reader, &mut data_in),
        Err(_) => VIRTIO_BLK_S_IOERR,
    };
    let status_len = match status_out.write_all(&[status as u8]) {
        Ok(()) => 1,
        Err(_) => 0,
    };
    (data_in.bytes_written() + status_len) as u32
}

fn run(disk: &Disk, buf: &mut Vec<u8>, reader: &mut Reader, data_in: &mut Writer) -> u32 {
    let mut header = [0u8; 16];
    if reader.read_exact(&mut header).is_err() {
        return VIRTIO_BLK_S_IOERR;
    }
    let request_type = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    let result = match request_type {
        VIRTIO_BLK_T_IN => read(disk, buf, sector, data_in),
        VIRTIO_BLK_T_OUT if disk.read_only => Err(io::ErrorKind::PermissionDenied.into()),
        VIRTIO_BLK_T_OUT => write(disk, buf, sector, reader),
        // A read-only disk has nothing to flush.
        VIRTIO_BLK_T_FLUSH if disk.read_only => Ok(()),
        VIRTIO_BLK_T_FLUSH => disk.file.sync_data(),
        VIRTIO_BLK_T_GET_ID => {
            let n = disk.id.len().min(data_in.available_bytes());
            data_in.write_all(&disk.id[..n])
        }
        _ => return VIRTIO_BLK_S_UNSUPP,
    };
    match result {
        Ok(()) => VIRTIO_BLK_S_OK,
        Err(_) => VIRTIO_BLK_S_IOERR,
    }
}

/// The byte offset of `len` bytes at `sector`, if they are whole sectors inside the disk.
fn disk_offset(disk: &Disk, sector: u64, len: usize) -> io::Result<u64> {
    let len = len as u64;
    let offset = sector
        .checked_mul(SECTOR_SIZE)
        .filter(|offset| len % SECTOR_SIZE == 0 && offset.checked_add(len).is_some())
        .filter(|offset| offset + len <= disk.sectors * SECTOR_SIZE);
    offset.ok_or_else(|| io::ErrorKind::InvalidInput.into())
}

fn read(disk: &Disk, buf: &mut Vec<u8>, sector: u64, data_in: &mut Writer) -> io::Result<()> {
    let mut remaining = data_in.available_bytes();
    let mut offset = disk_offset(disk, sector, remaining)?;
    while remaining > 0 {
        let n = remaining.min(CHUNK);
        let chunk = bounce(buf, n);
        disk.file.read_exact_at(chunk, offset)?;
        data_in.write_all(chunk)?;
        remaining -= n;
        offset += n as u64;
    }
    Ok(())
}

fn write(disk: &Disk, buf: &mut Vec<u8>, sector: u64, reader: &mut Reader) -> io::Result<()> {
    let mut remaining = reader.available_bytes();
    let mut offset = disk_offset(disk, sector, remaining)?;
    while remaining > 0 {
        let n = remaining.min(CHUNK);
        let chunk = bounce(buf, n);
        reader.read_exact(chunk)?;
        disk.file.write_all_at(chunk, offset)?;
        remaining -= n;
        offset += n as u64;
    }
    Ok(())
}

/// The first `n` bytes of the reused bounce buffer (grown on demand, never past `CHUNK`).
fn bounce(buf: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if buf.len() < n {
        buf.resize(n, 0);
    }
    &mut buf[..n]
}
