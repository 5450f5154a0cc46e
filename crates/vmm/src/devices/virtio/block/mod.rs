//! virtio-blk over a raw image file or host block device.
//!
//! One request queue, processed in the vCPU thread that notifies it, with positional I/O on
//! the image so no seek position is shared.

mod disk;
mod request;
#[cfg(test)]
mod tests;

pub use disk::BlockError;

use super::{
    check_queue_count, drain_queue, read_config_bytes, ActivateError, VirtioDevice, VirtioInterrupt,
    BASE_FEATURES, TYPE_BLOCK,
};
use crate::GuestMemory;
use disk::Disk;
use std::path::Path;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX};
use virtio_queue::Queue;

const QUEUE_SIZE: u16 = 256;
/// Data segments per request: the queue minus the header and status descriptors. Without it
/// Linux sends one segment per request.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;

pub struct Block {
    disk: Disk,
    active: Option<Active>,
    /// The bounce buffer requests move through, kept between requests.
    buf: Vec<u8>,
}

struct Active {
    mem: GuestMemory,
    queue: Queue,
}

impl Block {
    /// Opens the image at `path` and locks it (exclusively unless `read_only`); `id` is the
    /// serial the guest reads (GET_ID, /sys/block/vdX/serial), cut to 20 bytes.
    pub fn open(path: impl AsRef<Path>, read_only: bool, id: impl AsRef<str>) -> Result<Self, BlockError> {
        Ok(Self {
            disk: Disk::open(path.as_ref(), read_only, id.as_ref())?,
            active: None,
            buf: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.disk.path
    }

    pub fn read_only(&self) -> bool {
        self.disk.read_only
    }

    /// Size in 512-byte sectors (a trailing partial sector of the image is not exposed).
    pub fn capacity(&self) -> u64 {
        self.disk.sectors
    }

    fn config(&self) -> [u8; 16] {
        // struct virtio_blk_config: capacity, size_max (not offered), seg_max.
        let mut config = [0u8; 16];
        config[0..8].copy_from_slice(&self.disk.sectors.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let ro = if self.disk.read_only {
            1 << VIRTIO_BLK_F_RO
        } else {
            0
        };
        BASE_FEATURES | (1 << VIRTIO_BLK_F_FLUSH) | (1 << VIRTIO_BLK_F_SEG_MAX) | ro
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        mut queues: Vec<Queue>,
        _interrupt: VirtioInterrupt,
    ) -> Result<(), ActivateError> {
        check_queue_count(TYPE_BLOCK, &queues, 1)?;
        let queue = queues.remove(0);
        self.active = Some(Active { mem, queue });
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> bool {
        let Some(Active { mem, queue }) = self.active.as_mut() else {
            return false;
        };
        if index != 0 {
            return false;
        }
        let (disk, buf) = (&self.disk, &mut self.buf);
        drain_queue(queue, mem, |chain| Some(request::execute(disk, buf, mem, chain)))
    }

    fn reset(&mut self) {
        self.active = None;
    }

    // Requests complete within the notifying vCPU's exit, so a paused VM has none in flight:
    // the queue positions are the whole state (the disk's content is the host's file).
    fn saved_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        Some(self.active.iter().map(|a| a.queue.state()).collect())
    }
}
