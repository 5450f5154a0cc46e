//! Virtio devices over the virtio-mmio transport.
//!
//! A device ([`VirtioDevice`]) knows nothing of registers: [`MmioTransport`] holds the virtio-mmio
//! register file, negotiates features, collects the queue set-up and, on DRIVER_OK, hands the
//! queues, guest memory and interrupt to the device. Queue notifications arrive through
//! ioeventfds and are processed on a worker thread per device (`notifier`); a QueueNotify
//! write that reaches the MMIO bus instead is processed in the vCPU thread that made it.
//!
//! Building a VM's devices:
//!
//! ```text
//! let (base, gsi) = layout::virtio_mmio_window(index);
//! let irq = IrqLine::new(gsi)?; // and register irq.event() with KVM as an irqfd for gsi
//! let disk = Block::open(path, read_only, &index.to_string())?;
//! let transport = Arc::new(Mutex::new(MmioTransport::new(mem.clone(), Box::new(disk), irq)));
//! let window = MmioWindow::new(transport.clone()); // the interrupt registers without its lock
//! mmio_bus.insert(base, layout::VIRTIO_MMIO_SIZE, Arc::new(Mutex::new(window)))?;
//! ```

pub mod block;
pub mod console;
pub mod metrics;
pub mod mmio;
pub mod net;
pub mod notifier;
pub mod rng;
#[cfg(test)]
mod testing;
pub mod vsock;

pub use block::{Block, BlockError};
pub use console::{Console, ConsoleInput};
pub use mmio::MmioTransport;
pub use rng::Rng;

use crate::devices::irq::IrqLine;
use crate::GuestMemory;
use metrics::QueueCounters;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

/// Features every device here offers: virtio 1.x, and the ring features [`drain_queue`] honours.
pub const BASE_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_RING_F_INDIRECT_DESC);

/// What a device of virtio type `device_type` is called in metrics and error lines.
pub fn device_kind(device_type: u32) -> &'static str {
    match device_type {
        net::TYPE_NET => "net",
        TYPE_BLOCK => "block",
        TYPE_CONSOLE => "console",
        TYPE_RNG => "rng",
        vsock::TYPE_VSOCK => "vsock",
        _ => "unknown",
    }
}

/// Device type ids (virtio 1.2 §5).
pub const TYPE_BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
pub const TYPE_CONSOLE: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
pub const TYPE_RNG: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("virtio device type {device_type} needs {expected} queues, the transport gave {got}")]
    QueueCount {
        device_type: u32,
        expected: usize,
        got: usize,
    },
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device type (`TYPE_*`).
    fn device_type(&self) -> u32;
    /// The largest size of each queue (powers of two); their count is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver, including [`BASE_FEATURES`].
    fn features(&self) -> u64;
    /// Reads the device configuration space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (most devices ignore it).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK: the queues (one per `queue_max_sizes` entry) are the device's
    /// until `reset`.
    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: VirtioInterrupt,
    ) -> Result<(), ActivateError>;
    /// The driver notified queue `index`; returns whether the guest must be interrupted.
    fn process_queue(&mut self, index: usize) -> bool;
    /// The driver reset the device: drop the queues and memory, keep the backend.
    fn reset(&mut self);
    /// The driver accepted `features` (FEATURES_OK); devices whose backend depends on them
    /// (a tap's offloads) take note here.
    fn ack_features(&mut self, _features: u64) {}
    /// The VM's pause gate, for devices with threads of their own that touch guest memory: they
    /// hold it around their work so a paused VM stands still (see `notifier::PauseGate`).
    fn set_pause_gate(&mut self, _gate: Arc<notifier::PauseGate>) {}
    /// The device was activated from a snapshot's state in a new process: tell the guest about
    /// anything the snapshot could not carry (vsock's host connections).
    fn restored(&mut self) {}
    /// For a snapshot: the queues the device holds while active (empty while inactive), or
    /// `None` if its state cannot be saved yet (backend threads, host connections).
    fn saved_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        None
    }
    /// For a snapshot: device state beyond its queues, as bytes (a console's input not yet
    /// delivered).
    fn saved_data(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Puts back what `saved_data` gave, before the device is activated again.
    fn restore_data(&mut self, _data: &[u8]) {}
    /// Which device this is among those of its kind (a NIC's tap), for metrics.
    fn id(&self) -> String {
        String::new()
    }
    /// The device's own counters, by name, for metrics.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// KVM signals the guest's notifications of the device's queues on `events` (one per queue).
    /// A device with a thread of its own may keep copies and wait on them there, returning
    /// true; otherwise (false) the VM's queue worker for the device waits on them and calls
    /// `process_queue`.
    fn take_queue_events(&mut self, _events: &[vmm_sys_util::eventfd::EventFd]) -> bool {
        false
    }
}

/// The device's side of the interrupt: the InterruptStatus bits shared with the transport, and
/// the line that raises them. Cloned into devices that complete work outside a notification.
#[derive(Clone, Debug)]
pub struct VirtioInterrupt {
    status: Arc<AtomicU32>,
    line: IrqLine,
    /// The transport's counters; interrupts are counted here.
    counters: Arc<QueueCounters>,
}

impl VirtioInterrupt {
    pub fn new(line: IrqLine, counters: Arc<QueueCounters>) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            line,
            counters,
        }
    }

    /// The transport's counters (a device that waits on its own notifications counts them).
    pub fn counters(&self) -> &Arc<QueueCounters> {
        &self.counters
    }

    fn raise(&self) {
        metrics::add(&self.counters.interrupts, 1);
        // The only failure is a saturated counter, i.e. an interrupt already pending.
        let _ = self.line.trigger();
    }

    /// Used buffers were added to a queue.
    pub fn signal_used_queue(&self) {
        self.signal(VIRTIO_MMIO_INT_VRING);
    }

    /// The configuration space changed.
    pub fn signal_config_change(&self) {
        self.signal(VIRTIO_MMIO_INT_CONFIG);
    }

    /// The line behaves as a level one (high while any InterruptStatus bit is set) carried over
    /// an edge-triggered GSI: an edge is sent only when the status goes from clear to set, and
    /// again by `ack` if bits remain. Work completed while an interrupt is pending raises no
    /// second one: the guest's handler acknowledges what it read, then looks at every queue.
    /// (An edge per completion made the guest take about 1.6 times the interrupts, each costing
    /// two register exits, under network load in the lab.)
    fn signal(&self, bit: u32) {
        if self.status.fetch_or(bit, Ordering::SeqCst) == 0 {
            self.raise();
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Puts back InterruptStatus bits from a snapshot (and raises the line if any is set).
    pub fn restore_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
        if bits != 0 {
            self.raise();
        }
    }

    fn ack(&self, bits: u32) {
        // Bits set after the guest read the status stay set: they need an interrupt of their own.
        if self.status.fetch_and(!bits, Ordering::SeqCst) & !bits != 0 {
            self.raise();
        }
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

/// Completes the available chains of `queue`: `handle` consumes a chain and returns how many
/// bytes it wrote into it, or `None` to leave that chain (and the rest) for later. Returns
/// whether the guest must be interrupted (EVENT_IDX aware).
pub(crate) fn drain_queue<F>(queue: &mut Queue, mem: &GuestMemory, mut handle: F) -> bool
where
    F: FnMut(DescriptorChain<&GuestMemory>) -> Option<u32>,
{
    // Never touch the rings of a queue the driver did not set up (their addresses are defaults).
    if !queue.ready() {
        return false;
    }
    let mut used = false;
    loop {
        // Without EVENT_IDX this sets NO_NOTIFY so the driver skips kicks while we drain.
        let _ = queue.disable_notification(mem);
        let mut progressed = false;
        let mut stalled = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let Some(len) = handle(chain) else {
                queue.go_to_previous_position();
                stalled = true;
                break;
            };
            progressed = true;
            // Fails only for a head index the driver made up; nothing can be returned then.
            if queue.add_used(mem, head, len).is_ok() {
                used = true;
            }
        }
        // Re-enabling re-checks the ring so a chain added meanwhile is not left unseen; a ring
        // whose index is garbage makes no progress, and must not spin the vCPU.
        match queue.enable_notification(mem) {
            Ok(true) if progressed && !stalled => continue,
            _ => break,
        }
    }
    used && queue.needs_notification(mem).unwrap_or(true)
}

/// Fails unless the transport passed one queue per entry of `queue_max_sizes`.
pub(crate) fn check_queue_count(
    device_type: u32,
    queues: &[Queue],
    expected: usize,
) -> Result<(), ActivateError> {
    if queues.len() == expected {
        Ok(())
    } else {
        Err(ActivateError::QueueCount {
            device_type,
            expected,
            got: queues.len(),
        })
    }
}

/// Copies the window `[offset, offset + data.len())` of a configuration space; zero past its end.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[cfg(test)]
mod interrupt_tests {
    use super::*;

    /// Edges sent so far (reading the eventfd resets its counter).
    fn edges(interrupt: &VirtioInterrupt) -> u64 {
        interrupt.line.event().read().unwrap_or(0)
    }

    #[test]
    fn one_edge_per_pending_interrupt_and_another_for_bits_left_after_the_ack() {
        let interrupt = VirtioInterrupt::new(IrqLine::new(5).unwrap(), Arc::default());
        interrupt.signal_used_queue();
        interrupt.signal_used_queue();
        assert_eq!(
            edges(&interrupt),
            1,
            "completions while pending raise no second edge"
        );
        assert_eq!(interrupt.status(), VIRTIO_MMIO_INT_VRING);
        // The guest read VRING; the config changed before its acknowledgement.
        interrupt.signal_config_change();
        assert_eq!(edges(&interrupt), 0);
        interrupt.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(
            edges(&interrupt),
            1,
            "the config bit left set gets its own interrupt"
        );
        interrupt.ack(VIRTIO_MMIO_INT_CONFIG);
        assert_eq!((interrupt.status(), edges(&interrupt)), (0, 0));
        interrupt.signal_used_queue();
        assert_eq!(edges(&interrupt), 1, "a clear status raises the line again");
    }
}
