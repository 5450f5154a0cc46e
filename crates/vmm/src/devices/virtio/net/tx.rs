//! The transmit side: the chains the guest queued go to the tap, each frame read straight from
//! guest memory.

use super::tap::Tap;
use super::{ETH_HLEN, MAX_PACKET, VNET_HDR_LEN};
use crate::devices::virtio::drain_queue;
use crate::devices::virtio::metrics::{add, NetCounters};
use crate::GuestMemory;
use std::io::Read;
use std::sync::Arc;
use virtio_queue::{DescriptorChain, Queue, QueueState, Reader};
use vm_memory::GuestMemoryBackend;

/// The transmit queue and what sending needs. Locked by whichever thread processes it: the NIC's
/// thread when KVM delivers the guest's notifications on an eventfd, else the notifying vCPU.
pub(super) struct TxQueue {
    mem: GuestMemory,
    queue: Queue,
    tap: Arc<Tap>,
    /// The bounce buffer of frames in more pieces than one writev takes.
    buf: Vec<u8>,
    counters: Arc<NetCounters>,
}

impl TxQueue {
    pub fn new(mem: GuestMemory, queue: Queue, tap: Arc<Tap>, counters: Arc<NetCounters>) -> Self {
        Self {
            mem,
            queue,
            tap,
            buf: Vec::new(),
            counters,
        }
    }

    /// Sends every chain the guest queued; returns whether it must be interrupted.
    pub fn drain(&mut self) -> bool {
        let (tap, buf, mem, counters) = (&self.tap, &mut self.buf, &self.mem, &self.counters);
        drain_queue(&mut self.queue, mem, |chain| {
            match transmit(tap, buf, mem, chain) {
                Some(len) => {
                    add(&counters.tx_frames, 1);
                    add(&counters.tx_bytes, len as u64);
                }
                None => add(&counters.tx_dropped, 1),
            }
            Some(0)
        })
    }

    /// The queue's position and set-up, for a snapshot.
    pub fn queue_state(&self) -> QueueState {
        self.queue.state()
    }
}

/// Sends one chain (virtio header, frame) to the tap; returns the frame's length, or None if it
/// was dropped. Malformed chains and frames the tap refuses are dropped, as a NIC drops bad
/// frames; the chain goes back to the guest either way.
///
/// The tap reads the frame straight from guest memory (one writev over the chain's buffers):
/// under load, copying every frame into a bounce buffer first cost as much as the write.
/// Chains of more pieces than [`MAX_PIECES`] take the copy.
fn transmit(
    tap: &Tap,
    buf: &mut Vec<u8>,
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
) -> Option<usize> {
    let mut pieces = [EMPTY_PIECE; MAX_PIECES];
    match gather(mem, chain.clone(), &mut pieces) {
        Gathered::Pieces(count, len) => {
            if !(VNET_HDR_LEN + ETH_HLEN..=MAX_PACKET).contains(&len) {
                return None;
            }
            // SAFETY: `gather` took every piece from `mem`, which this function borrows, so the
            // memory stays mapped until writev returns.
            let written = unsafe { tap.write_frame_gathered(&pieces[..count]) };
            written.ok().map(|_| len - VNET_HDR_LEN)
        }
        Gathered::Malformed => None,
        Gathered::TooManyPieces => transmit_copy(tap, buf, mem, chain),
    }
}

/// The most pieces a frame is gathered from; Linux sends a header, the linear part and at most
/// 17 page fragments.
const MAX_PIECES: usize = 64;
const EMPTY_PIECE: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

enum Gathered {
    /// How many pieces, and their total length.
    Pieces(usize, usize),
    /// Outside guest memory, or longer than any frame.
    Malformed,
    TooManyPieces,
}

/// The device-readable buffers of `chain` as iovecs over guest memory.
fn gather(mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>, pieces: &mut [libc::iovec]) -> Gathered {
    let (mut count, mut len) = (0, 0usize);
    for desc in chain.readable() {
        len = match len.checked_add(desc.len() as usize) {
            Some(len) if len <= MAX_PACKET => len,
            _ => return Gathered::Malformed,
        };
        // A buffer may span guest memory regions: one piece per region.
        for slice in GuestMemoryBackend::get_slices(mem, desc.addr(), desc.len() as usize) {
            let Ok(slice) = slice else {
                return Gathered::Malformed;
            };
            let Some(piece) = pieces.get_mut(count) else {
                return Gathered::TooManyPieces;
            };
            // The guard only matters for Xen's foreign mappings; ours are plain mmaps.
            *piece = libc::iovec {
                iov_base: slice.ptr_guard().as_ptr().cast_mut().cast(),
                iov_len: slice.len(),
            };
            count += 1;
        }
    }
    Gathered::Pieces(count, len)
}

/// `transmit` through a bounce buffer, for chains of many pieces.
fn transmit_copy(
    tap: &Tap,
    buf: &mut Vec<u8>,
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
) -> Option<usize> {
    let mut reader = Reader::new(mem, chain).ok()?;
    let len = reader.available_bytes();
    if !(VNET_HDR_LEN + ETH_HLEN..=MAX_PACKET).contains(&len) {
        return None;
    }
    buf.resize(len, 0);
    reader.read_exact(buf).ok()?;
    // The kernel checks the header (EINVAL); EAGAIN is a full host queue. Both drop the frame.
    tap.write_frame(buf).ok().map(|_| len - VNET_HDR_LEN)
}
