//! The virtio-mmio transport, register layout version 2 (virtio 1.2 §4.2.2).
//!
//! One page per device: 32-bit registers below 0x100, the device configuration space above.
//! Everything the guest writes is untrusted: bad widths, offsets, orders and values are ignored.

use super::metrics::{self, DeviceMetrics, QueueCounters};
use super::{VirtioDevice, VirtioInterrupt};
use crate::arch::layout::VIRTIO_MMIO_SIZE;
use crate::devices::bus::BusDevice;
use crate::devices::irq::IrqLine;
use crate::GuestMemory;
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueState, QueueT};

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
/// Vendor id: "VSSL"; Linux does not care, it only has to be stable.
const VENDOR_ID: u32 = 0x4c53_5356;

// Register offsets (virtio_bindings has them as u32; offsets here are u64).
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
/// Where an ioeventfd catches the guest's notifications (the queue index is the data).
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
const REG_QUEUE_USED_LOW: u64 = 0x0a0;
const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_LEN_HIGH: u64 = 0x0b4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG_SPACE: u64 = 0x100;

/// One queue's position and set-up, as a snapshot keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedQueue {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl From<QueueState> for SavedQueue {
    fn from(q: QueueState) -> Self {
        SavedQueue {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx: q.event_idx_enabled,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<SavedQueue> for QueueState {
    fn from(q: SavedQueue) -> Self {
        QueueState {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// A transport's registers and queues, for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportSnapshot {
    pub device_type: u32,
    pub status: u32,
    pub driver_features: u64,
    pub queue_select: u32,
    pub device_features_select: u32,
    pub driver_features_select: u32,
    pub interrupt_status: u32,
    pub active: bool,
    pub queues: Vec<SavedQueue>,
    /// `VirtioDevice::saved_data`; absent in older files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_data: Vec<u8>,
}

/// A virtio device in its virtio-mmio register window; put it on the MMIO bus.
pub struct MmioTransport {
    mem: GuestMemory,
    device: Box<dyn VirtioDevice>,
    interrupt: VirtioInterrupt,
    counters: Arc<QueueCounters>,
    /// The queue set-up as the driver programs it; copies go to the device on DRIVER_OK.
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    active: bool,
}

impl MmioTransport {
    /// Wraps `device`; `irq` is the device's interrupt line (registered with KVM by the caller).
    pub fn new(mem: GuestMemory, device: Box<dyn VirtioDevice>, irq: IrqLine) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&size| Queue::new(power_of_two_below(size)).unwrap_or_default())
            .collect();
        let counters = Arc::new(QueueCounters::default());
        Self {
            mem,
            device,
            interrupt: VirtioInterrupt::new(irq, counters.clone()),
            counters,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            active: false,
        }
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The transport's state, with the device's live queue positions when it is active;
    /// `None` when the device's own state cannot be saved.
    pub fn save(&self) -> Option<TransportSnapshot> {
        let device_queues = self.device.saved_queues()?;
        let queues = if self.active && device_queues.len() == self.queues.len() {
            device_queues.into_iter().map(SavedQueue::from).collect()
        } else {
            self.queues.iter().map(|q| SavedQueue::from(q.state())).collect()
        };
        Some(TransportSnapshot {
            device_type: self.device.device_type(),
            status: self.status,
            driver_features: self.driver_features,
            queue_select: self.queue_select,
            device_features_select: self.device_features_select,
            driver_features_select: self.driver_features_select,
            interrupt_status: self.interrupt.status(),
            active: self.active,
            queues,
            device_data: self.device.saved_data(),
        })
    }

    /// Puts a saved state back (on a fresh transport of the same device type); an active device
    /// is activated again with the saved queue positions. False if the state does not fit.
    pub fn restore(&mut self, saved: &TransportSnapshot) -> bool {
        if saved.device_type != self.device.device_type() || saved.queues.len() != self.queues.len() {
            return false;
        }
        let mut queues = Vec::with_capacity(saved.queues.len());
        for queue in &saved.queues {
            match Queue::try_from(QueueState::from(*queue)) {
                Ok(queue) => queues.push(queue),
                Err(_) => return false,
            }
        }
        self.queues = queues;
        self.status = saved.status;
        self.driver_features = saved.driver_features;
        self.queue_select = saved.queue_select;
        self.device_features_select = saved.device_features_select;
        self.driver_features_select = saved.driver_features_select;
        if saved.status & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            self.device.ack_features(saved.driver_features);
        }
        self.device.restore_data(&saved.device_data);
        if saved.active && !self.activate() {
            return false;
        }
        self.interrupt.restore_status(saved.interrupt_status);
        if saved.active {
            self.device.restored();
        }
        true
    }

    /// The interrupt shared with the device (InterruptStatus bits and the line).
    pub fn interrupt(&self) -> &VirtioInterrupt {
        &self.interrupt
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn has_status(&self, bits: u32) -> bool {
        self.status & bits == bits
    }

    /// Queue registers may change only between FEATURES_OK and DRIVER_OK.
    fn queue_setup_allowed(&self) -> bool {
        self.has_status(VIRTIO_CONFIG_S_FEATURES_OK)
            && self.status & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED) == 0
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_select as usize);
        match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| q.max_size().into()),
            REG_QUEUE_READY => queue.map_or(0, |q| q.ready().into()),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            // No shared memory regions: a length of all ones says "absent".
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH => u32::MAX,
            // No device here changes its configuration behind the driver's back.
            REG_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_select = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_select = value,
            REG_DRIVER_FEATURES => self.write_driver_features(value),
            REG_QUEUE_SEL => self.queue_select = value,
            REG_QUEUE_NOTIFY => {
                metrics::add(&self.counters.notifications, 1);
                self.notify_queue(value as usize)
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(value),
            REG_STATUS => self.write_status(value),
            REG_QUEUE_NUM | REG_QUEUE_READY | REG_QUEUE_DESC_LOW..=REG_QUEUE_USED_HIGH
                if self.queue_setup_allowed() =>
            {
                self.write_queue_register(offset, value)
            }
            _ => {}
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if !self.has_status(VIRTIO_CONFIG_S_DRIVER) || self.has_status(VIRTIO_CONFIG_S_FEATURES_OK) {
            return;
        }
        let shift = match self.driver_features_select {
            0 => 0,
            1 => 32,
            _ => return,
        };
        let word = (u64::from(value) << shift) & self.device.features();
        self.driver_features = (self.driver_features & !(0xffff_ffff << shift)) | word;
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        let Some(queue) = self.selected_queue() else {
            return;
        };
        // The Queue setters validate (power-of-two size, alignment) and ignore bad values.
        match offset {
            REG_QUEUE_NUM => {
                if let Ok(size) = u16::try_from(value) {
                    queue.set_size(size);
                }
            }
            REG_QUEUE_READY => queue.set_ready(value == 1),
            REG_QUEUE_DESC_LOW => queue.set_desc_table_address(Some(value), None),
            REG_QUEUE_DESC_HIGH => queue.set_desc_table_address(None, Some(value)),
            REG_QUEUE_AVAIL_LOW => queue.set_avail_ring_address(Some(value), None),
            REG_QUEUE_AVAIL_HIGH => queue.set_avail_ring_address(None, Some(value)),
            REG_QUEUE_USED_LOW => queue.set_used_ring_address(Some(value), None),
            REG_QUEUE_USED_HIGH => queue.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // Bits are only ever added until a reset.
        if value & self.status != self.status {
            return;
        }
        let mut value = value;
        let added = value & !self.status;
        let handshake = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && (value & handshake != handshake || self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0)
        {
            // Legacy drivers are refused: the driver reads FEATURES_OK back as clear.
            value &= !VIRTIO_CONFIG_S_FEATURES_OK;
        } else if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            self.device.ack_features(self.driver_features);
        }
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            if value & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                value &= !VIRTIO_CONFIG_S_DRIVER_OK;
            } else if !self.activate() {
                value |= VIRTIO_CONFIG_S_NEEDS_RESET;
            }
        }
        self.status = value;
    }

    /// Hands copies of the queues to the device; false if the set-up is unusable.
    fn activate(&mut self) -> bool {
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            // A ready queue whose rings fall outside guest RAM would fail on every access.
            if queue.ready() && !queue.is_valid(&self.mem) {
                return false;
            }
            let mut state = queue.state();
            state.event_idx_enabled = event_idx;
            match Queue::try_from(state) {
                Ok(copy) => queues.push(copy),
                Err(_) => return false,
            }
        }
        let activated = self
            .device
            .activate(self.mem.clone(), queues, self.interrupt.clone());
        self.active = activated.is_ok();
        self.active
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        self.queues.iter_mut().for_each(QueueT::reset);
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt.clear();
    }

    /// How many queues the device has (one QueueNotify value each).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The counters shared with the interrupt; the queue worker adds the notifications it takes.
    pub fn counters(&self) -> &Arc<QueueCounters> {
        &self.counters
    }

    /// Offers the device the eventfds of its queue notifications (see
    /// `VirtioDevice::take_queue_events`); true if it waits on them itself.
    pub fn take_queue_events(&mut self, events: &[vmm_sys_util::eventfd::EventFd]) -> bool {
        self.device.take_queue_events(events)
    }

    /// What the device did so far.
    pub fn metrics(&self) -> DeviceMetrics {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        DeviceMetrics {
            kind: super::device_kind(self.device.device_type()),
            id: self.device.id(),
            notifications: get(&self.counters.notifications),
            interrupts: get(&self.counters.interrupts),
            counters: self.device.counters().into_iter().collect(),
        }
    }

    /// The guest notified queue `index` (through the register or an ioeventfd).
    pub fn notify_queue(&mut self, index: usize) {
        if self.active && index < self.queues.len() && self.device.process_queue(index) {
            self.interrupt.signal_used_queue();
        }
    }
}

/// Split queues have power-of-two sizes; a device declaring another size gets the one below.
fn power_of_two_below(size: u16) -> u16 {
    1 << (15 - size.max(1).leading_zeros())
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_SPACE {
            if offset < VIRTIO_MMIO_SIZE && matches!(data.len(), 1 | 2 | 4 | 8) {
                self.device.read_config(offset - CONFIG_SPACE, data);
            }
        } else if data.len() == 4 && offset % 4 == 0 {
            data.copy_from_slice(&self.read_register(offset).to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            if offset < VIRTIO_MMIO_SIZE && matches!(data.len(), 1 | 2 | 4 | 8) {
                self.device.write_config(offset - CONFIG_SPACE, data);
            }
        } else if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            if offset % 4 == 0 {
                self.write_register(offset, u32::from_le_bytes(bytes));
            }
        }
    }
}

/// What the MMIO bus holds for a transport. InterruptStatus reads and InterruptACK writes touch
/// only the interrupt's atomic bits, so they are answered without the transport's lock: a vCPU
/// taking an interrupt never waits behind a queue worker that holds the transport through a tap
/// or disk write. Every other register goes to the transport.
pub struct MmioWindow {
    interrupt: VirtioInterrupt,
    transport: Arc<Mutex<MmioTransport>>,
}

impl MmioWindow {
    pub fn new(transport: Arc<Mutex<MmioTransport>>) -> Self {
        let interrupt = lock(&transport).interrupt().clone();
        Self { interrupt, transport }
    }
}

impl BusDevice for MmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == REG_INTERRUPT_STATUS && data.len() == 4 {
            data.copy_from_slice(&self.interrupt.status().to_le_bytes());
        } else {
            lock(&self.transport).read(offset, data);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset == REG_INTERRUPT_ACK => self.interrupt.ack(u32::from_le_bytes(bytes)),
            _ => lock(&self.transport).write(offset, data),
        }
    }
}

fn lock(transport: &Mutex<MmioTransport>) -> MutexGuard<'_, MmioTransport> {
    transport.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
