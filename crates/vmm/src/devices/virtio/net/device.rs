//! The virtio-net device: features, configuration space, and the hand-over of its queues to
//! the NIC's thread.

use super::backend::{Backend, QueueNotifications, RxQueue};
use super::tap::{NetError, Tap};
use super::tx::TxQueue;
use super::TYPE_NET;
use crate::devices::virtio::metrics::NetCounters;
use crate::devices::virtio::notifier::PauseGate;
use crate::devices::virtio::{
    check_queue_count, read_config_bytes, ActivateError, VirtioDevice, VirtioInterrupt, BASE_FEATURES,
};
use crate::GuestMemory;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{Queue, QueueState};
use vmm_sys_util::eventfd::EventFd;

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;

/// What the device offers. Host offloads (CSUM, HOST_TSO*) need nothing from us: the tap takes
/// partial checksums and GSO frames from any writer. Guest offloads become `TUNSETOFFLOAD` flags.
const FEATURES: u64 = BASE_FEATURES
    | (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_MRG_RXBUF)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_STATUS);

/// A virtio network card backed by a tap device.
pub struct Net {
    tap: Arc<Tap>,
    mac: [u8; 6],
    /// The features the driver accepted, as far as the device was told (see `ack_features`).
    acked: u64,
    active: Option<Active>,
    /// Held by the NIC's thread around each round; closed while the VM is paused.
    gate: Arc<PauseGate>,
    counters: Arc<NetCounters>,
    /// The eventfds KVM signals the guest's queue notifications on, when it does: the NIC's
    /// thread waits on them itself (see `take_queue_events`).
    notifications: Option<Arc<QueueNotifications>>,
}

struct Active {
    /// Shared with the NIC's thread, which locks each for its rounds.
    tx: Arc<Mutex<TxQueue>>,
    rx_queue: Arc<Mutex<RxQueue>>,
    /// None only if the thread could not be started; receive is then dead until a reset.
    rx: Option<Backend>,
}

impl Net {
    /// Opens the tap `tap` (created if absent) for a NIC whose MAC is `mac`, or a random
    /// locally administered one.
    pub fn new(tap: &str, mac: Option<[u8; 6]>) -> Result<Self, NetError> {
        Ok(Self::with_tap(Tap::open(tap)?, mac))
    }

    /// A NIC on a tap opened elsewhere.
    pub fn with_tap(tap: Tap, mac: Option<[u8; 6]>) -> Self {
        let mac = mac.unwrap_or_else(|| random_mac(tap.name()));
        Self {
            tap: Arc::new(tap),
            mac,
            acked: 0,
            active: None,
            gate: Arc::default(),
            counters: Arc::default(),
            notifications: None,
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    /// The driver accepted `features` (at FEATURES_OK); they decide the tap's offloads and
    /// whether received frames may span buffers (MRG_RXBUF) at the next activation.
    pub fn ack_features(&mut self, features: u64) {
        self.acked = features & FEATURES;
    }

    fn config(&self) -> [u8; 8] {
        // struct virtio_net_config: mac, status (max_virtqueue_pairs and the rest not offered).
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn ack_features(&mut self, features: u64) {
        Net::ack_features(self, features);
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: VirtioInterrupt,
    ) -> Result<(), ActivateError> {
        check_queue_count(TYPE_NET, &queues, 2)?;
        self.active = None;
        // Never leave the offloads of an earlier activation on: frames the guest cannot take.
        if self.tap.set_offload(tun_offloads(self.acked)).is_err() {
            let _ = self.tap.set_offload(0);
        }
        let mut queues = queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            return Ok(());
        };
        let tx = Arc::new(Mutex::new(TxQueue::new(
            mem.clone(),
            tx,
            self.tap.clone(),
            self.counters.clone(),
        )));
        let rx_queue = Arc::new(Mutex::new(RxQueue::new(
            mem,
            rx,
            interrupt,
            self.acked,
            self.counters.clone(),
        )));
        let backend = Backend::spawn(
            self.tap.clone(),
            rx_queue.clone(),
            tx.clone(),
            self.gate.clone(),
            self.notifications.clone(),
        );
        let rx = match backend {
            Ok(backend) => Some(backend),
            Err(e) => {
                // Only resource exhaustion gets here; the guest still transmits through MMIO exits
                // (KVM's eventfds are then nobody's: the vCPU path below is the only one).
                eprintln!("vessel-vmm: tap {}: no NIC thread: {e}", self.tap.name());
                None
            }
        };
        self.active = Some(Active { tx, rx_queue, rx });
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        match index {
            RX => {
                if let Some(backend) = &active.rx {
                    backend.kick();
                }
                false
            }
            TX => lock(&active.tx).drain(),
            _ => false,
        }
    }

    fn reset(&mut self) {
        // Dropping the backend stops and joins its thread; the tap stays open for the next driver.
        self.active = None;
        self.acked = 0;
    }

    fn set_pause_gate(&mut self, gate: Arc<PauseGate>) {
        self.gate = gate;
    }

    fn id(&self) -> String {
        self.tap.name().to_owned()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters.named()
    }

    /// The NIC's thread serves both queues and the tap: after sending what the guest queued it
    /// takes what the tap holds for the guest (often the peer's answer to those very frames, put
    /// there during the write) and interrupts once for both. Called while the VM is built,
    /// before any activation.
    fn take_queue_events(&mut self, events: &[EventFd]) -> bool {
        let [rx, tx] = events else {
            return false;
        };
        match (rx.try_clone(), tx.try_clone()) {
            (Ok(rx), Ok(tx)) => {
                self.notifications = Some(Arc::new(QueueNotifications { rx, tx }));
                true
            }
            // Out of descriptors: the VM's generic queue worker serves this NIC's queues instead.
            _ => false,
        }
    }

    /// Both queues' positions. Called with the VM paused, so the receive thread is outside its
    /// round; a frame it had read but not yet placed (waiting for buffers) is not saved: the guest
    /// sees it as lost on the wire, which TCP and every other protocol on Ethernet survive.
    fn saved_queues(&self) -> Option<Vec<QueueState>> {
        let Some(active) = &self.active else {
            return Some(Vec::new());
        };
        let rx = lock(&active.rx_queue).queue_state();
        Some(vec![rx, lock(&active.tx).queue_state()])
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `TUN_F_*` offloads the guest can receive, given its accepted features.
pub(super) fn tun_offloads(acked: u64) -> u32 {
    let has = |bit: u32| acked & (1 << bit) != 0;
    // The kernel ignores TSO without CSUM, and the spec ties GUEST_TSO* to GUEST_CSUM.
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    flags
}

/// A random unicast, locally administered MAC. RandomState is seeded from the OS per process and
/// differs per instance, so NICs of one VM and of different VMs differ.
pub(super) fn random_mac(tap: &str) -> [u8; 6] {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write(tap.as_bytes());
    let bytes = hasher.finish().to_le_bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}
