//! The state the vCPU side and the backend thread share behind one mutex: the guest's queues,
//! the connections by port pair, and the packets owed to the guest.
//!
//! Packets for the guest are not queued as packets: each connection keeps a small set of owed
//! control packets and reads host data only when an rx buffer is in hand, so memory stays bounded
//! when the guest posts no rx buffers. RSTs for connections already gone wait in a bounded queue;
//! when it is full the tx queue waits too, which is the guest's back-pressure.

use super::connection::{ConnKey, Connection, Produced, State, Verdict, OWE_CREDIT_UPDATE, OWE_RESPONSE};
use super::host::Client;
use super::packet::{
    Header, HDR_SIZE, HOST_CID, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, TYPE_STREAM,
};
use super::socket::connect_nonblocking;
use crate::devices::virtio::{drain_queue, VirtioInterrupt};
use crate::GuestMemory;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// epoll tokens; host sockets get the ones after these, never reused.
pub const TOKEN_STOP: u64 = 0;
pub const TOKEN_LISTENER: u64 = 1;
const FIRST_TOKEN: u64 = 2;
/// Connections plus host clients that have not sent their CONNECT line yet.
pub const MAX_CONNECTIONS: usize = 1024;
/// RSTs waiting for rx buffers before the tx queue stops being processed.
pub const MAX_PENDING_RSTS: usize = 64;
/// Largest payload of one packet either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: usize = 64 << 10;
/// Host-side ports of host-initiated connections start here, clear of ports programs pick.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// How long a host client may take to send its CONNECT line, and the guest to answer REQUEST.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Active {
    pub mem: GuestMemory,
    pub rx: Queue,
    pub tx: Queue,
    /// The guest's event buffers; the only event sent is a transport reset after a restore.
    pub event: Queue,
    pub interrupt: VirtioInterrupt,
}

pub struct Muxer {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
    pub listener: UnixListener,
    pub epoll: Arc<Epoll>,
    pub active: Option<Active>,
    pub conns: HashMap<ConnKey, Connection>,
    /// epoll token → connection.
    pub tokens: HashMap<u64, ConnKey>,
    /// Host clients still to send `CONNECT <port>\n`, by token.
    pub clients: HashMap<u64, Client>,
    pub handshake_timeout: Duration,
    /// Accepting failed (out of fds): the listener rests until then instead of spinning.
    pub listener_paused_until: Option<Instant>,
    /// Connections with something for the guest, in turn.
    rx_order: VecDeque<ConnKey>,
    rsts: VecDeque<Header>,
    tx_stalled: bool,
    next_token: u64,
    next_port: u32,
    /// Payload staging, `MAX_PAYLOAD` bytes.
    scratch: Vec<u8>,
}

/// A poisoned lock means a thread panicked mid-update; the sockets and queues are still usable.
pub fn lock(muxer: &Mutex<Muxer>) -> MutexGuard<'_, Muxer> {
    muxer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Muxer {
    pub fn new(guest_cid: u64, uds_path: PathBuf, listener: UnixListener, epoll: Arc<Epoll>) -> Self {
        Self {
            guest_cid,
            uds_path,
            listener,
            epoll,
            active: None,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            clients: HashMap::new(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            listener_paused_until: None,
            rx_order: VecDeque::new(),
            rsts: VecDeque::new(),
            tx_stalled: false,
            next_token: FIRST_TOKEN,
            next_port: FIRST_LOCAL_PORT,
            scratch: vec![0; MAX_PAYLOAD],
        }
    }

    /// Closes every connection and host client (the listener stays) and forgets the queues.
    pub fn deactivate(&mut self) {
        self.active = None;
        self.conns.clear();
        self.tokens.clear();
        self.clients.clear();
        self.rx_order.clear();
        self.rsts.clear();
        self.tx_stalled = false;
        if self.listener_paused_until.take().is_some() {
            self.resume_listener();
        }
    }

    pub fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token - 1
    }

    /// A host-side port no connection uses (`u32::MAX` is VMADDR_PORT_ANY).
    pub fn next_local_port(&mut self) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = if port >= u32::MAX - 1 {
                FIRST_LOCAL_PORT
            } else {
                port + 1
            };
            if !self.conns.keys().any(|key| key.local_port == port) {
                return port;
            }
        }
    }

    pub fn signal(&self) {
        if let Some(active) = &self.active {
            active.interrupt.signal_used_queue();
        }
    }

    /// Tells the guest every connection it had is gone (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, after
    /// a restore: the host sockets belonged to another process). False when the guest has posted
    /// no event buffer.
    pub fn send_transport_reset(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mem = &active.mem;
        let Some(chain) = active.event.pop_descriptor_chain(mem) else {
            return false;
        };
        let head = chain.head_index();
        // struct virtio_vsock_event { le32 id; }, id 0: transport reset.
        let written = match Writer::new(mem, chain) {
            Ok(mut writer) if writer.available_bytes() >= 4 => {
                writer.write_all(&0u32.to_le_bytes()).map_or(0, |()| 4)
            }
            _ => 0,
        };
        let _ = active.event.add_used(mem, head, written);
        active.interrupt.signal_used_queue();
        written == 4
    }

    /// Processes the tx queue if asked (or if it waited for rx room), then fills rx buffers.
    /// Returns whether the guest must be interrupted.
    pub fn process(&mut self, tx: bool) -> bool {
        let mut notify = tx && self.process_tx();
        loop {
            notify |= self.deliver();
            if !self.tx_stalled || self.rsts.len() >= MAX_PENDING_RSTS {
                return notify;
            }
            notify |= self.process_tx();
        }
    }

    fn process_tx(&mut self) -> bool {
        let Some(mut active) = self.active.take() else {
            return false;
        };
        self.tx_stalled = false;
        let mem = &active.mem;
        let notify = drain_queue(&mut active.tx, mem, |chain| {
            if self.rsts.len() >= MAX_PENDING_RSTS {
                self.tx_stalled = true;
                return None;
            }
            if let Ok(mut reader) = Reader::new(mem, chain) {
                self.guest_packet(&mut reader);
            }
            Some(0)
        });
        self.active = Some(active);
        notify
    }

    /// One packet from the guest. Packets that are not well-formed, not from the guest's CID or
    /// not of stream type are dropped: there is no one to answer them.
    fn guest_packet(&mut self, reader: &mut Reader<'_>) {
        let mut bytes = [0; HDR_SIZE];
        if reader.read_exact(&mut bytes).is_err() {
            return;
        }
        let header = Header::from_bytes(&bytes);
        let len = header.len as usize;
        if header.src_cid != self.guest_cid
            || header.type_ != TYPE_STREAM
            || len > MAX_PAYLOAD
            || reader.available_bytes() < len
        {
            return;
        }
        if header.dst_cid != HOST_CID {
            return self.refuse(&header);
        }
        let key = ConnKey {
            local_port: header.dst_port,
            peer_port: header.src_port,
        };
        if header.op == OP_REQUEST {
            return self.guest_connect(key, &header);
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return self.refuse(&header);
        };
        conn.update_peer_credit(&header);
        match header.op {
            OP_RESPONSE if matches!(conn.state, State::Connecting { .. }) => {
                conn.accept_response(key.local_port);
                conn.flush();
            }
            OP_RST => return self.remove(key, false),
            OP_SHUTDOWN => conn.guest_shutdown(header.flags),
            OP_RW => {
                let data = &mut self.scratch[..len];
                if !conn.guest_may_send() || reader.read_exact(data).is_err() || !conn.push_from_guest(data) {
                    conn.broken = true;
                }
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => conn.owed |= OWE_CREDIT_UPDATE,
            // A RESPONSE out of turn, or an unknown op.
            _ => conn.broken = true,
        }
        self.settle(key);
    }

    /// The guest connects to host port P: the host application listens on `<uds_path>_P`.
    fn guest_connect(&mut self, key: ConnKey, header: &Header) {
        // A REQUEST on a pair in use means the guest forgot the old connection.
        self.remove(key, false);
        if self.conns.len() + self.clients.len() >= MAX_CONNECTIONS {
            return self.refuse(header);
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.local_port));
        let Ok(stream) = connect_nonblocking(Path::new(&path)) else {
            return self.refuse(header);
        };
        let token = self.next_token();
        let mut conn = Connection::new(stream, token, State::Established);
        conn.update_peer_credit(header);
        conn.owed |= OWE_RESPONSE;
        if !self.insert(key, conn) {
            self.refuse(header);
        }
    }

    /// Adds a connection, registering its socket with epoll unless it already is.
    pub fn insert(&mut self, key: ConnKey, mut conn: Connection) -> bool {
        if conn.interest.is_none() {
            let event = EpollEvent::new(EventSet::empty(), conn.token);
            if self
                .epoll
                .ctl(ControlOperation::Add, conn.stream.as_raw_fd(), event)
                .is_err()
            {
                return false;
            }
            conn.interest = Some(EventSet::empty());
        }
        self.tokens.insert(conn.token, key);
        self.conns.insert(key, conn);
        self.settle(key);
        true
    }

    /// Answers a packet for no connection with RST (never an RST with an RST).
    fn refuse(&mut self, header: &Header) {
        if header.op != OP_RST {
            self.rsts.push_back(Header {
                src_cid: header.dst_cid,
                dst_cid: header.src_cid,
                src_port: header.dst_port,
                dst_port: header.src_port,
                type_: TYPE_STREAM,
                op: OP_RST,
                ..Header::default()
            });
        }
    }

    /// Removes a connection (closing its host socket, which also leaves the epoll set), telling
    /// the guest with RST if `reset`.
    pub fn remove(&mut self, key: ConnKey, reset: bool) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        self.tokens.remove(&conn.token);
        if reset {
            self.rsts.push_back(Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: key.local_port,
                dst_port: key.peer_port,
                type_: TYPE_STREAM,
                op: OP_RST,
                ..Header::default()
            });
        }
    }

    /// After anything happened to a connection: remove it if it is over, update its epoll
    /// interest, and queue it for rx if it has something for the guest.
    pub fn settle(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        match conn.verdict() {
            Verdict::Keep => {}
            Verdict::Reset => {
                let told = conn.guest_knows();
                return self.remove(key, told);
            }
            Verdict::Forget => return self.remove(key, false),
        }
        if let Some(current) = conn.interest {
            let wanted = conn.wanted_interest();
            if wanted != current {
                let event = EpollEvent::new(wanted, conn.token);
                if self
                    .epoll
                    .ctl(ControlOperation::Modify, conn.stream.as_raw_fd(), event)
                    .is_err()
                {
                    // Unwatchable: better reset than stall or spin.
                    return self.remove(key, true);
                }
                conn.interest = Some(wanted);
            }
        }
        if conn.has_rx() && !conn.queued {
            conn.queued = true;
            self.rx_order.push_back(key);
        }
    }

    /// Fills rx buffers with what is owed; returns whether the guest must be interrupted.
    fn deliver(&mut self) -> bool {
        // Nothing owed: leave the ring alone (the backend comes here on every wake-up).
        if self.rsts.is_empty() && self.rx_order.is_empty() {
            return false;
        }
        let Some(mut active) = self.active.take() else {
            return false;
        };
        let mem = &active.mem;
        let notify = drain_queue(&mut active.rx, mem, |chain| self.fill_rx(mem, chain));
        self.active = Some(active);
        notify
    }

    /// Writes the next packet into one rx chain; `None` leaves the chain for later.
    fn fill_rx(&mut self, mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> Option<u32> {
        if self.rsts.is_empty() && self.rx_order.is_empty() {
            return None;
        }
        let Ok(mut writer) = Writer::new(mem, chain) else {
            return Some(0);
        };
        // A buffer too small for a header is useless: hand it back empty.
        let Some(room) = writer.available_bytes().checked_sub(HDR_SIZE) else {
            return Some(0);
        };
        match self.next_packet(room) {
            Some((header, len)) => {
                let written = writer.write_all(&header.to_bytes()).is_ok()
                    && writer.write_all(&self.scratch[..len]).is_ok();
                Some(if written { (HDR_SIZE + len) as u32 } else { 0 })
            }
            // Only data waits and this buffer holds a header alone: hand it back unused rather
            // than let it block the ring.
            None if room == 0 && !self.rx_order.is_empty() => Some(0),
            None => None,
        }
    }

    /// The next packet for the guest (payload in `scratch`), connections taking turns. Bounded:
    /// with no room for payload, a connection with only data to send produces nothing.
    fn next_packet(&mut self, room: usize) -> Option<(Header, usize)> {
        for _ in 0..=self.rx_order.len() {
            if let Some(rst) = self.rsts.pop_front() {
                return Some((rst, 0));
            }
            let key = self.rx_order.pop_front()?;
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.queued = false;
            let produced = conn.produce(key, self.guest_cid, &mut self.scratch[..room.min(MAX_PAYLOAD)]);
            // Back of the line if it has more; an RST it ends with goes after this packet.
            self.settle(key);
            if let Produced::Packet(header, len) = produced {
                return Some((header, len));
            }
        }
        self.rsts.pop_front().map(|rst| (rst, 0))
    }
}

#[cfg(test)]
impl Muxer {
    pub fn connection_count(&self) -> usize {
        self.conns.len() + self.clients.len()
    }

    /// Nothing left of past connections but the listener.
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty() && self.tokens.is_empty() && self.clients.is_empty() && self.rsts.is_empty()
    }
}
