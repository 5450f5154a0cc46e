//! A test "guest driver": programs an `MmioTransport` through its registers as Linux's
//! virtio_mmio does, and builds descriptor chains in guest memory with virtio-queue's mock rings.

use super::{MmioTransport, VirtioDevice};
use crate::devices::bus::BusDevice;
use crate::devices::irq::IrqLine;
use crate::GuestMemory;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::{AvailRing, DescriptorTable, UsedRing};
use vm_memory::{Bytes, GuestAddress};

pub const QUEUE_SIZE: u16 = 16;
/// Guest buffers go here, well past the rings.
pub const DATA: u64 = 0x4_0000;

pub const STATUS: u64 = 0x70;
pub const NOTIFY: u64 = 0x50;
pub const INTERRUPT_STATUS: u64 = 0x60;
pub const INTERRUPT_ACK: u64 = 0x64;
pub const QUEUE_SEL: u64 = 0x30;
pub const QUEUE_READY: u64 = 0x44;

pub fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

/// A buffer of a chain: guest address, length, device-writable.
pub type Buf = (u64, u32, bool);

/// One split virtqueue as the driver sees it. (`MockSplitQueue` packs its used ring over the
/// tail of its available ring, so the parts are placed separately here.)
pub struct GuestQueue<'m> {
    base: u64,
    desc: DescriptorTable<'m, GuestMemory>,
    avail: AvailRing<'m, GuestMemory>,
    used: UsedRing<'m, GuestMemory>,
    next_desc: u16,
}

impl<'m> GuestQueue<'m> {
    fn new(mem: &'m GuestMemory, index: usize) -> Self {
        let base = 0x1000 * (index as u64 + 1);
        Self {
            base,
            desc: DescriptorTable::new(mem, GuestAddress(base), QUEUE_SIZE),
            avail: AvailRing::new(mem, GuestAddress(base + 0x400), QUEUE_SIZE),
            used: UsedRing::new(mem, GuestAddress(base + 0x800), QUEUE_SIZE),
            next_desc: 0,
        }
    }
}

pub struct Driver<'m> {
    pub mem: &'m GuestMemory,
    pub transport: MmioTransport,
    pub irq: IrqLine,
    pub queues: Vec<GuestQueue<'m>>,
}

impl<'m> Driver<'m> {
    pub fn new(mem: &'m GuestMemory, device: Box<dyn VirtioDevice>) -> Self {
        let irq = IrqLine::new(5).unwrap();
        let transport = MmioTransport::new(mem.clone(), device, irq.clone());
        Self {
            mem,
            transport,
            irq,
            queues: Vec::new(),
        }
    }

    pub fn read32(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    pub fn write32(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    /// Brings the device up as Linux does, accepting `features` (masked by what is offered) and
    /// setting up `queues` queues of `QUEUE_SIZE`. Returns the Status register afterwards.
    pub fn init(&mut self, features: u64, queues: usize) -> u32 {
        self.write32(STATUS, 0);
        self.write32(STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        let mut status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
        self.write32(STATUS, status);
        let accepted = self.offered() & features;
        self.write32(0x24, 0);
        self.write32(0x20, accepted as u32);
        self.write32(0x24, 1);
        self.write32(0x20, (accepted >> 32) as u32);
        status |= VIRTIO_CONFIG_S_FEATURES_OK;
        self.write32(STATUS, status);
        if self.read32(STATUS) & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            return self.read32(STATUS);
        }
        self.queues.clear();
        for index in 0..queues {
            let queue = GuestQueue::new(self.mem, index);
            self.write32(QUEUE_SEL, index as u32);
            assert_eq!(self.read32(QUEUE_READY), 0);
            assert!(self.read32(0x34) >= u32::from(QUEUE_SIZE));
            self.write32(0x38, u32::from(QUEUE_SIZE));
            let base = queue.base;
            for (reg, addr) in [(0x80, base), (0x90, base + 0x400), (0xa0, base + 0x800)] {
                self.write32(reg, addr as u32);
                self.write32(reg + 4, (addr >> 32) as u32);
            }
            self.write32(QUEUE_READY, 1);
            self.queues.push(queue);
        }
        self.write32(STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
        self.read32(STATUS)
    }

    pub fn offered(&mut self) -> u64 {
        self.write32(0x14, 0);
        let low = u64::from(self.read32(0x10));
        self.write32(0x14, 1);
        low | (u64::from(self.read32(0x10)) << 32)
    }

    /// Makes `bufs` one chain and offers it on `queue`; returns its head index.
    pub fn add_chain(&mut self, queue: usize, bufs: &[Buf]) -> u16 {
        let q = &mut self.queues[queue];
        let head = q.next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % QUEUE_SIZE;
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = (index + 1) % QUEUE_SIZE;
            let desc = Descriptor::new(addr, len, flags, next);
            q.desc.store(index, RawDescriptor::from(desc)).unwrap();
        }
        q.next_desc = (head + bufs.len() as u16) % QUEUE_SIZE;
        let idx = q.avail.idx().load();
        let slot = usize::from(idx % QUEUE_SIZE);
        q.avail.ring().ref_at(slot).unwrap().store(head);
        q.avail.idx().store(idx.wrapping_add(1));
        head
    }

    /// Offers `bufs` through an indirect descriptor table written at `table`.
    pub fn add_indirect_chain(&mut self, queue: usize, table: u64, bufs: &[Buf]) -> u16 {
        let indirect = DescriptorTable::new(self.mem, GuestAddress(table), bufs.len() as u16);
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let desc = Descriptor::new(addr, len, flags, i as u16 + 1);
            indirect.store(i as u16, RawDescriptor::from(desc)).unwrap();
        }
        let head = self.add_chain(queue, &[(table, 16 * bufs.len() as u32, false)]);
        let q = &self.queues[queue];
        let desc = Descriptor::new(table, 16 * bufs.len() as u32, VRING_DESC_F_INDIRECT as u16, 0);
        q.desc.store(head, RawDescriptor::from(desc)).unwrap();
        head
    }

    /// EVENT_IDX: asks for an interrupt once the used index passes `index`, as Linux's
    /// virtqueue_enable_cb does with the last used index it has seen.
    pub fn set_used_event(&self, queue: usize, index: u16) {
        let used_event = self.queues[queue].base + 0x400 + 4 + 2 * u64::from(QUEUE_SIZE);
        self.write_mem(used_event, &index.to_le_bytes());
    }

    pub fn notify(&mut self, queue: usize) {
        self.write32(NOTIFY, queue as u32);
    }

    /// The used ring's entries so far: (head index, bytes written).
    pub fn used(&self, queue: usize) -> Vec<(u32, u32)> {
        let used = &self.queues[queue].used;
        let count = used.idx().load();
        (0..count)
            .map(|i| {
                let elem = used.ring().ref_at(usize::from(i % QUEUE_SIZE)).unwrap().load();
                (elem.id(), elem.len())
            })
            .collect()
    }

    /// Whether the interrupt fired since the last call (the eventfd is non-blocking).
    pub fn irq_fired(&self) -> bool {
        self.irq.event().read().is_ok()
    }

    pub fn write_mem(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    pub fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0; len];
        self.mem.read_slice(&mut data, GuestAddress(addr)).unwrap();
        data
    }
}
