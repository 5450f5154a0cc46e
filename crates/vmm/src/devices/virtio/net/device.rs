//! The virtio-net device: features, configuration space, queue hand-over, and transmit.

use super::backend::{Backend, RxQueue};
use super::tap::{NetError, Tap};
use super::{ETH_HLEN, MAX_PACKET, TYPE_NET, VNET_HDR_LEN};
use crate::devices::virtio::metrics::{add, NetCounters};
use crate::devices::virtio::notifier::PauseGate;
use crate::devices::virtio::{
    check_queue_count, drain_queue, read_config_bytes, ActivateError, VirtioDevice, VirtioInterrupt,
    BASE_FEATURES,
};
use crate::GuestMemory;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::{Arc, Mutex};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{DescriptorChain, Queue, QueueState, Reader};
use vm_memory::GuestMemoryBackend;

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
    /// The bounce buffer transmitted frames move through.
    tx_buf: Vec<u8>,
    /// Held by the receive thread around each round; closed while the VM is paused.
    gate: Arc<PauseGate>,
    counters: Arc<NetCounters>,
}

struct Active {
    mem: GuestMemory,
    tx: Queue,
    /// Shared with the receive thread, which locks it for each round of filling buffers.
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
            tx_buf: Vec::new(),
            gate: Arc::default(),
            counters: Arc::default(),
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
        let rx_queue = Arc::new(Mutex::new(RxQueue::new(
            mem.clone(),
            rx,
            interrupt,
            self.acked,
            self.counters.clone(),
        )));
        let rx = match Backend::spawn(self.tap.clone(), rx_queue.clone(), self.gate.clone()) {
            Ok(backend) => Some(backend),
            Err(e) => {
                // Only resource exhaustion gets here; the guest still transmits.
                eprintln!("vessel-vmm: tap {}: no receive thread: {e}", self.tap.name());
                None
            }
        };
        self.active = Some(Active {
            mem,
            tx,
            rx_queue,
            rx,
        });
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
            TX => {
                let (tap, buf, mem) = (&self.tap, &mut self.tx_buf, &active.mem);
                let counters = &self.counters;
                drain_queue(&mut active.tx, mem, |chain| {
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

    /// Both queues' positions. Called with the VM paused, so the receive thread is outside its
    /// round; a frame it had read but not yet placed (waiting for buffers) is not saved: the guest
    /// sees it as lost on the wire, which TCP and every other protocol on Ethernet survive.
    fn saved_queues(&self) -> Option<Vec<QueueState>> {
        let Some(active) = &self.active else {
            return Some(Vec::new());
        };
        let rx = active
            .rx_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queue_state();
        Some(vec![rx, active.tx.state()])
    }
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
