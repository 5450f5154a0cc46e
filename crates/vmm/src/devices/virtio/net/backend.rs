//! The NIC's thread, and the receive side: frames from the tap into the guest's buffers.
//!
//! One thread per NIC serves the tap and both queues. It waits on the eventfds KVM signals the
//! guest's queue notifications on (when the device was given them), on `kick` (the guest posted
//! receive buffers through an MMIO exit instead) and `stop` (reset or drop; the thread is joined
//! before the queues' memory goes away). Each round sends what the transmit queue holds, then
//! moves what the tap holds into receive buffers, then interrupts the guest once if either side
//! needs it: a transmitted frame's answer (a TCP ACK) is often in the tap by the time the write
//! returns, and goes to the guest with the same interrupt. The thread locks the queues (the
//! device side takes them only for an MMIO-exit notification or a snapshot) and holds the VM's
//! pause gate for each round, so a paused VM stands still.
//!
//! The thread polls the tap only while the guest has buffers. When they run out it keeps the frame
//! in hand, asks the guest for a notification and waits for it; frames arriving meanwhile wait
//! in the tap's queue (and the kernel drops past its length, as a full NIC ring would).

use super::tap::Tap;
use super::tx::TxQueue;
use super::{ETH_HLEN, MAX_PACKET, NUM_BUFFERS_OFFSET, VNET_HDR_LEN};
use crate::devices::virtio::metrics::{add, NetCounters, QueueCounters};
use crate::devices::virtio::notifier::PauseGate;
use crate::devices::virtio::VirtioInterrupt;
use crate::GuestMemory;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
};
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT, Writer};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_CLOEXEC, EFD_NONBLOCK};

const TOKEN_TAP: u64 = 0;
const TOKEN_KICK: u64 = 1;
const TOKEN_STOP: u64 = 2;
const TOKEN_RX_NOTIFY: u64 = 3;
const TOKEN_TX_NOTIFY: u64 = 4;

/// Copies of the eventfds KVM signals the guest's notifications of each queue on.
pub(super) struct QueueNotifications {
    pub rx: EventFd,
    pub tx: EventFd,
}
/// Frames delivered before the guest is interrupted and stop is checked again, so a busy tap
/// neither starves the guest of interrupts nor delays a reset.
const BUDGET: usize = 64;

/// The receive queue and what the thread needs to fill it.
pub(super) struct RxQueue {
    mem: GuestMemory,
    queue: Queue,
    interrupt: VirtioInterrupt,
    /// MRG_RXBUF: a frame may span several chains (num_buffers says how many).
    mergeable: bool,
    /// GUEST_CSUM: header flags may be passed on (else they must be zero).
    guest_csum: bool,
    /// GUEST_TSO4/6: GSO frames may be passed on.
    guest_gso: bool,
    /// Used entries were added since the guest was last considered for an interrupt.
    added: bool,
    counters: Arc<NetCounters>,
}

impl RxQueue {
    /// The receive queue of a driver that accepted `features`.
    pub fn new(
        mem: GuestMemory,
        queue: Queue,
        interrupt: VirtioInterrupt,
        features: u64,
        counters: Arc<NetCounters>,
    ) -> Self {
        let has = |bit: u32| features & (1 << bit) != 0;
        Self {
            mem,
            queue,
            interrupt,
            mergeable: has(VIRTIO_NET_F_MRG_RXBUF),
            guest_csum: has(VIRTIO_NET_F_GUEST_CSUM),
            guest_gso: has(VIRTIO_NET_F_GUEST_TSO4) || has(VIRTIO_NET_F_GUEST_TSO6),
            added: false,
            counters,
        }
    }

    /// The queue's position and set-up, for a snapshot.
    pub fn queue_state(&self) -> QueueState {
        self.queue.state()
    }
}

/// The running receive thread; dropping it stops and joins the thread.
pub(super) struct Backend {
    kick: Arc<EventFd>,
    /// Registered with the thread's epoll; it outlives the thread (joined on drop).
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn spawn(
        tap: Arc<Tap>,
        rx: Arc<Mutex<RxQueue>>,
        tx: Arc<Mutex<TxQueue>>,
        gate: Arc<PauseGate>,
        notifications: Option<Arc<QueueNotifications>>,
    ) -> io::Result<Self> {
        let kick = Arc::new(EventFd::new(EFD_NONBLOCK | EFD_CLOEXEC)?);
        let stop = EventFd::new(EFD_NONBLOCK | EFD_CLOEXEC)?;
        let epoll = Epoll::new()?;
        let mut fds = vec![(kick.as_raw_fd(), TOKEN_KICK), (stop.as_raw_fd(), TOKEN_STOP)];
        if let Some(n) = &notifications {
            fds.extend([
                (n.rx.as_raw_fd(), TOKEN_RX_NOTIFY),
                (n.tx.as_raw_fd(), TOKEN_TX_NOTIFY),
            ]);
        }
        for (fd, token) in fds {
            let event = EpollEvent::new(EventSet::IN, token);
            epoll.ctl(ControlOperation::Add, fd, event)?;
        }
        let counters = lock(&rx).interrupt.counters().clone();
        // Thread names are cut at 15 bytes by the kernel; the tap's name says which NIC.
        let name: String = format!("net-{}", tap.name()).chars().take(15).collect();
        let worker = Worker {
            tap,
            rx,
            tx,
            notifications,
            counters,
            gate,
            epoll,
            kick: kick.clone(),
            buf: vec![0; MAX_PACKET],
            pending: None,
            tap_polled: false,
            tap_broken: false,
        };
        let thread = thread::Builder::new().name(name).spawn(move || {
            crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Device);
            worker.run()
        })?;
        Ok(Self {
            kick,
            stop,
            thread: Some(thread),
        })
    }

    /// The guest posted receive buffers.
    pub fn kick(&self) {
        // Fails only when the counter is saturated, i.e. a kick is already pending.
        let _ = self.kick.write(1);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has been reported already; the device just stops receiving.
            let _ = thread.join();
        }
    }
}

/// What the thread waits for after a round of filling buffers.
enum Wait {
    /// The tap to become readable: the guest has buffers.
    Tap,
    /// A kick: the guest has no buffers (or the tap is gone).
    Kick,
    /// Nothing: the round ran out of budget and more work is ready.
    Nothing,
}

/// How one frame fared.
enum Delivery {
    Done,
    /// Not enough buffers yet; `seen` is the available index just past the ones examined.
    NoBuffers {
        seen: u16,
    },
    /// Dropped: larger than every buffer the guest can offer, or behind unusable chains.
    Dropped,
}

struct Worker {
    tap: Arc<Tap>,
    rx: Arc<Mutex<RxQueue>>,
    tx: Arc<Mutex<TxQueue>>,
    notifications: Option<Arc<QueueNotifications>>,
    /// Where the guest's notifications are counted.
    counters: Arc<QueueCounters>,
    gate: Arc<PauseGate>,
    epoll: Epoll,
    kick: Arc<EventFd>,
    buf: Vec<u8>,
    /// Length of a frame read from the tap and still in `buf`, waiting for buffers.
    pending: Option<usize>,
    tap_polled: bool,
    /// The tap failed (its interface was deleted): never poll it again.
    tap_broken: bool,
}

impl Worker {
    fn run(mut self) {
        let mut events = [EpollEvent::default(); 8];
        // A restored device may have had a transmit notification in flight when its snapshot was
        // taken: the first round looks at the transmit queue (harmless when it is empty).
        let mut transmit = true;
        loop {
            // A closed gate means the VM is ending: its memory must not be touched any more.
            if !self.gate.enter() {
                return;
            }
            let sent = std::mem::take(&mut transmit) && lock(&self.tx).drain();
            let wait = self.fill(sent);
            self.gate.leave();
            self.poll_tap(matches!(wait, Wait::Tap) && !self.tap_broken);
            let timeout = if matches!(wait, Wait::Nothing) { 0 } else { -1 };
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("vessel-vmm: tap {}: receive thread: epoll: {e}", self.tap.name());
                    return;
                }
            };
            for event in &events[..n] {
                match event.data() {
                    TOKEN_STOP => return,
                    TOKEN_KICK => {
                        let _ = self.kick.read();
                    }
                    TOKEN_RX_NOTIFY | TOKEN_TX_NOTIFY => {
                        let Some(n) = &self.notifications else { continue };
                        let fd = if event.data() == TOKEN_TX_NOTIFY {
                            &n.tx
                        } else {
                            &n.rx
                        };
                        // Reading resets the counter: several notifications become one round.
                        add(&self.counters.notifications, fd.read().unwrap_or(0));
                        transmit |= event.data() == TOKEN_TX_NOTIFY;
                    }
                    // epoll reports errors even on an idle registration: the interface is gone.
                    TOKEN_TAP if event.event_set().intersects(EventSet::ERROR | EventSet::HANG_UP) => {
                        self.tap_broken = true;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Registers the tap with epoll only while frames can be taken; level-triggered, so an
    /// unregistered tap with queued frames costs nothing and is seen again once registered.
    fn poll_tap(&mut self, want: bool) {
        if want == self.tap_polled {
            return;
        }
        let fd = self.tap.as_raw_fd();
        let result = if want {
            let event = EpollEvent::new(EventSet::IN, TOKEN_TAP);
            self.epoll.ctl(ControlOperation::Add, fd, event)
        } else {
            self.epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())
        };
        if result.is_ok() {
            self.tap_polled = want;
        }
    }

    /// Moves frames from the tap into the guest's buffers until one runs out, then interrupts
    /// the guest if it asked to be, or if `sent` says the transmit side needs it.
    fn fill(&mut self, sent: bool) -> Wait {
        let shared = self.rx.clone();
        let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
        // A plain reference, so the queue and the memory it reads can be borrowed apart.
        let rx = &mut *guard;
        if !rx.queue.ready() {
            if sent {
                rx.interrupt.signal_used_queue();
            }
            return Wait::Kick;
        }
        let _ = rx.queue.disable_notification(&rx.mem);
        let mut wait = Wait::Nothing;
        for _ in 0..BUDGET {
            let len = match self.pending.take() {
                Some(len) => len,
                None => match self.read_frame(rx) {
                    Some(len) => len,
                    None => {
                        wait = if self.tap_broken { Wait::Kick } else { Wait::Tap };
                        break;
                    }
                },
            };
            match rx.deliver(&mut self.buf[..len]) {
                Delivery::Done => {
                    add(&rx.counters.rx_frames, 1);
                    add(&rx.counters.rx_bytes, (len - VNET_HDR_LEN) as u64);
                }
                Delivery::Dropped => add(&rx.counters.rx_dropped, 1),
                Delivery::NoBuffers { seen } => {
                    self.pending = Some(len);
                    if !rx.rearm(seen) {
                        wait = Wait::Kick;
                        break;
                    }
                }
            }
        }
        let received = std::mem::take(&mut rx.added) && rx.queue.needs_notification(&rx.mem).unwrap_or(true);
        if received || sent {
            rx.interrupt.signal_used_queue();
        }
        wait
    }

    /// Reads the next frame the guest may take into `buf`; None when the tap has none (or failed).
    fn read_frame(&mut self, rx: &RxQueue) -> Option<usize> {
        loop {
            if self.tap_broken {
                return None;
            }
            let len = match self.tap.read_frame(&mut self.buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => {
                    eprintln!("vessel-vmm: tap {}: read: {e}", self.tap.name());
                    self.tap_broken = true;
                    return None;
                }
            };
            if len >= VNET_HDR_LEN + ETH_HLEN && rx.accepts(&mut self.buf[..VNET_HDR_LEN]) {
                return Some(len);
            }
            add(&rx.counters.rx_dropped, 1);
        }
    }
}

impl RxQueue {
    /// Whether the guest can take a frame with this header; clears what it did not negotiate.
    /// (The tap's offloads already follow the features; this guards against a stale setting.)
    fn accepts(&self, header: &mut [u8]) -> bool {
        let (flags, gso_type) = (u32::from(header[0]), u32::from(header[1]));
        if gso_type != VIRTIO_NET_HDR_GSO_NONE && !self.guest_gso {
            return false;
        }
        if !self.guest_csum {
            if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                return false;
            }
            // DATA_VALID too: flags must be zero without GUEST_CSUM (virtio 1.2 §5.1.6.4.1).
            header[0] = 0;
        }
        true
    }

    /// Copies the frame in `packet` (header included) into one chain, or several with
    /// MRG_RXBUF, and completes them. Writes num_buffers into the header.
    fn deliver(&mut self, packet: &mut [u8]) -> Delivery {
        let mem = &self.mem;
        let max_chains = if self.mergeable {
            usize::from(self.queue.size())
        } else {
            1
        };
        let mut chains = Vec::new();
        let mut room = 0;
        while room < packet.len() {
            if chains.len() == max_chains {
                // Even every buffer the queue can hold is too small: drop the frame, keep them.
                give_back(&mut self.queue, chains.len());
                return Delivery::Dropped;
            }
            let Some(chain) = self.queue.pop_descriptor_chain(mem) else {
                let seen = self.queue.next_avail();
                give_back(&mut self.queue, chains.len());
                return Delivery::NoBuffers { seen };
            };
            let head = chain.head_index();
            let writer = Writer::new(mem, chain).ok();
            // Every buffer must hold at least a header (virtio 1.2 §5.1.6.3.1).
            let Some(writer) = writer.filter(|w| w.available_bytes() >= VNET_HDR_LEN) else {
                // Unusable (outside guest memory, or too small): it goes back empty, which the
                // driver drops. Chains taken before it cannot be given back past it: they go
                // back empty too, and the frame is lost.
                self.added = true;
                let _ = self.queue.add_used(mem, head, 0);
                if chains.is_empty() {
                    continue;
                }
                for (head, _) in chains {
                    let _ = self.queue.add_used(mem, head, 0);
                }
                return Delivery::Dropped;
            };
            room += writer.available_bytes();
            chains.push((head, writer));
        }
        let count = chains.len() as u16;
        packet[NUM_BUFFERS_OFFSET..VNET_HDR_LEN].copy_from_slice(&count.to_le_bytes());
        let mut rest = &packet[..];
        for (head, mut writer) in chains {
            let n = writer.available_bytes().min(rest.len());
            let written = match writer.write_all(&rest[..n]) {
                Ok(()) => n,
                Err(_) => writer.bytes_written(),
            };
            rest = &rest[n..];
            // Fails only for a head the driver made up; nothing can be returned then.
            let _ = self.queue.add_used(mem, head, written as u32);
        }
        self.added = true;
        Delivery::Done
    }

    /// Asks the guest to notify when it adds buffers past index `seen`, then looks again so
    /// buffers added just before the request are not missed. True if there are new ones.
    fn rearm(&mut self, seen: u16) -> bool {
        // With EVENT_IDX the request is "notify past next_avail"; after giving chains back that
        // index is behind `seen` and the guest would never cross it: ask about `seen` instead.
        let next = self.queue.next_avail();
        self.queue.set_next_avail(seen);
        let enabled = self.queue.enable_notification(&self.mem);
        self.queue.set_next_avail(next);
        if !matches!(enabled, Ok(true)) {
            return false;
        }
        // A garbage index makes popping fail forever; only a sane one counts as new buffers.
        let sane = self
            .queue
            .avail_idx(&self.mem, Ordering::Acquire)
            .is_ok_and(|idx| idx.0.wrapping_sub(next) <= self.queue.size());
        if sane {
            let _ = self.queue.disable_notification(&self.mem);
        }
        sane
    }
}

/// Un-pops the last `count` chains.
fn give_back(queue: &mut Queue, count: usize) {
    for _ in 0..count {
        queue.go_to_previous_position();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
