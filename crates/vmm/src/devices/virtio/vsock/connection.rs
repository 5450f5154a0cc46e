//! One stream between a guest port and a host unix socket: its state, the bytes on their way to
//! the host, and the credit both sides grant each other (virtio 1.2 §5.10.6.3).

use super::packet::{
    Header, HOST_CID, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RW, OP_SHUTDOWN,
    SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::socket::send;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Instant;
use vmm_sys_util::epoll::EventSet;

/// Receive buffer the device grants the guest per connection (`buf_alloc`): guest bytes the host
/// has not taken yet are held up to this much.
pub const CONN_BUF_SIZE: u32 = 256 << 10;
/// Forwarded bytes after which the guest is told, unasked, that credit came back.
pub const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_SIZE / 2;

/// A connection's name: the host-side port and the guest-side port (the CIDs are fixed).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST sent (or owed) to the guest, no RESPONSE yet.
    Connecting {
        deadline: Instant,
    },
    Established,
}

/// Control packets owed to the guest (a set: asking twice sends once).
pub const OWE_REQUEST: u8 = 1;
pub const OWE_RESPONSE: u8 = 2;
pub const OWE_CREDIT_UPDATE: u8 = 4;
pub const OWE_CREDIT_REQUEST: u8 = 8;
pub const OWE_SHUTDOWN: u8 = 16;

/// What the connection wants done with it after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Remove it and tell the guest with RST.
    Reset,
    /// Remove it quietly: the guest already knows.
    Forget,
}

/// The next packet for the guest, produced into the caller's buffer.
pub enum Produced {
    /// A header, and for RW that many payload bytes at the start of the buffer.
    Packet(Header, usize),
    Nothing,
}

pub struct Connection {
    pub stream: UnixStream,
    pub token: u64,
    pub state: State,
    /// Events registered with epoll; `None` once the fd left the set.
    pub interest: Option<EventSet>,
    /// Control packets owed to the guest.
    pub owed: u8,
    shutdown_flags: u32,
    /// Queued in the muxer's delivery order.
    pub queued: bool,
    /// A fatal error or protocol violation: reset at the next settle.
    pub broken: bool,

    // Guest → host.
    to_host: VecDeque<u8>,
    /// Leading bytes of `to_host` the device wrote itself (`OK <port>\n`), outside the credit.
    own_bytes: usize,
    fwd_cnt: u32,
    fwd_cnt_told: u32,
    guest_shut_send: bool,
    guest_shut_rcv: bool,
    host_write_shut: bool,

    // Host → guest.
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    credit_requested: bool,
    /// The socket may have bytes (or EOF) to read: epoll said so and no read has blocked since.
    pub readable: bool,
    host_eof: bool,
    /// Both directions of the host socket are gone (EPOLLHUP).
    host_hup: bool,
    shutdown_told: bool,
}

impl Connection {
    pub fn new(stream: UnixStream, token: u64, state: State) -> Self {
        Self {
            stream,
            token,
            state,
            interest: None,
            owed: 0,
            shutdown_flags: 0,
            queued: false,
            broken: false,
            to_host: VecDeque::new(),
            own_bytes: 0,
            fwd_cnt: 0,
            fwd_cnt_told: 0,
            guest_shut_send: false,
            guest_shut_rcv: false,
            host_write_shut: false,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            credit_requested: false,
            readable: false,
            host_eof: false,
            host_hup: false,
            shutdown_told: false,
        }
    }

    /// Every packet from the guest carries its receive buffer and how much of it it consumed.
    pub fn update_peer_credit(&mut self, header: &Header) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
        self.credit_requested = false;
    }

    /// Bytes the guest can take now; wrapping counters, and a guest may shrink its buffer.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn wants_read(&self) -> bool {
        self.state == State::Established && !self.host_eof && !self.guest_shut_rcv
    }

    /// Whether a packet for the guest is ready (given an rx buffer).
    pub fn has_rx(&self) -> bool {
        self.owed != 0 || (self.readable && self.wants_read() && self.peer_credit() > 0)
    }

    /// The epoll events the connection needs now.
    pub fn wanted_interest(&self) -> EventSet {
        let mut events = EventSet::empty();
        if self.wants_read() && !self.readable {
            events |= EventSet::IN | EventSet::READ_HANG_UP;
        }
        if !self.to_host.is_empty() {
            events |= EventSet::OUT;
        }
        events
    }

    /// The guest answered our REQUEST: the host client hears `OK <port>` before any data.
    pub fn accept_response(&mut self, local_port: u32) {
        self.state = State::Established;
        let line = format!("OK {local_port}\n");
        self.own_bytes += line.len();
        self.to_host.extend(line.as_bytes());
    }

    /// Guest data for the host; false if the guest overran the credit it was given.
    pub fn push_from_guest(&mut self, data: &[u8]) -> bool {
        let held = self.to_host.len() - self.own_bytes;
        if held + data.len() > CONN_BUF_SIZE as usize {
            return false;
        }
        if data.is_empty() {
            return true;
        }
        if self.to_host.is_empty() {
            // The common case: straight to the socket, only the rest is held.
            match send(&self.stream, data) {
                Ok(n) => {
                    self.forwarded(n);
                    self.to_host.extend(&data[n..]);
                }
                Err(e) if retry_later(&e) => self.to_host.extend(data),
                Err(_) => self.broken = true,
            }
        } else {
            self.to_host.extend(data);
            self.flush();
        }
        true
    }

    /// Writes held bytes to the host socket until it would block.
    pub fn flush(&mut self) {
        while !self.to_host.is_empty() && !self.broken {
            let (front, back) = self.to_host.as_slices();
            let chunk = if front.is_empty() { back } else { front };
            match send(&self.stream, chunk) {
                Ok(n) => {
                    self.to_host.drain(..n);
                    let own = n.min(self.own_bytes);
                    self.own_bytes -= own;
                    self.forwarded(n - own);
                }
                Err(e) if retry_later(&e) => break,
                Err(_) => self.broken = true,
            }
        }
    }

    fn forwarded(&mut self, n: usize) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
        if self.fwd_cnt.wrapping_sub(self.fwd_cnt_told) >= CREDIT_UPDATE_THRESHOLD {
            self.owed |= OWE_CREDIT_UPDATE;
        }
    }

    /// The guest's SHUTDOWN: it sends (or receives) no more.
    pub fn guest_shutdown(&mut self, flags: u32) {
        if flags & SHUTDOWN_SEND != 0 {
            self.guest_shut_send = true;
        }
        if flags & SHUTDOWN_RCV != 0 && !self.guest_shut_rcv {
            self.guest_shut_rcv = true;
            // Host writes fail from now on instead of filling a buffer nobody reads.
            let _ = self.stream.shutdown(Shutdown::Read);
        }
    }

    /// Guest data after the guest said it would send no more breaks the protocol.
    pub fn guest_may_send(&self) -> bool {
        self.state == State::Established && !self.guest_shut_send
    }

    /// The host socket hung up both ways: what it still holds is read, nothing more is written.
    pub fn host_hung_up(&mut self) {
        self.host_hup = true;
        self.readable = true;
        self.to_host.clear();
        self.own_bytes = 0;
        if self.host_eof && self.shutdown_flags & SHUTDOWN_RCV == 0 {
            // The guest heard of a half-close; now it must stop sending too.
            self.shutdown_flags |= SHUTDOWN_RCV;
            self.owed |= OWE_SHUTDOWN;
            self.shutdown_told = false;
        }
    }

    /// Decides the connection's fate and finishes a half-close the guest asked for.
    pub fn verdict(&mut self) -> Verdict {
        if self.broken {
            return Verdict::Reset;
        }
        // A guest that can take nothing more is asked for credit it may be sitting on.
        if self.readable && self.wants_read() && self.peer_credit() == 0 && !self.credit_requested {
            self.credit_requested = true;
            self.owed |= OWE_CREDIT_REQUEST;
        }
        if self.host_hup {
            return match self.state {
                State::Connecting { .. } => Verdict::Reset,
                // Both told the guest: the host is gone.
                State::Established if self.shutdown_told => Verdict::Forget,
                State::Established if self.guest_shut_rcv => Verdict::Reset,
                State::Established => Verdict::Keep,
            };
        }
        if self.guest_shut_send && self.to_host.is_empty() {
            if self.guest_shut_rcv {
                // The guest closed both ways; our RST completes the clean close.
                return Verdict::Reset;
            }
            if !self.host_write_shut {
                self.host_write_shut = true;
                let _ = self.stream.shutdown(Shutdown::Write);
            }
        }
        Verdict::Keep
    }

    /// A header from the host side of this connection, carrying our current credit.
    pub fn header(&mut self, key: ConnKey, guest_cid: u64, op: u16) -> Header {
        self.fwd_cnt_told = self.fwd_cnt;
        self.owed &= !OWE_CREDIT_UPDATE;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: key.local_port,
            dst_port: key.peer_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt,
            ..Header::default()
        }
    }

    /// The next packet for the guest, whose buffer holds `room` payload bytes (`buf` at least
    /// that long): control first, then data, then the end of the stream.
    pub fn produce(&mut self, key: ConnKey, guest_cid: u64, buf: &mut [u8]) -> Produced {
        for (bit, op) in [
            (OWE_REQUEST, OP_REQUEST),
            (OWE_RESPONSE, OP_RESPONSE),
            (OWE_CREDIT_UPDATE, OP_CREDIT_UPDATE),
            (OWE_CREDIT_REQUEST, OP_CREDIT_REQUEST),
        ] {
            if self.owed & bit != 0 {
                self.owed &= !bit;
                return Produced::Packet(self.header(key, guest_cid, op), 0);
            }
        }
        if self.readable && self.wants_read() {
            let want = buf.len().min(self.peer_credit() as usize);
            if want > 0 {
                match (&self.stream).read(&mut buf[..want]) {
                    Ok(0) => {
                        self.readable = false;
                        self.host_eof = true;
                        self.owed |= OWE_SHUTDOWN;
                        // A hung-up host will not read either.
                        self.shutdown_flags = SHUTDOWN_SEND | if self.host_hup { SHUTDOWN_RCV } else { 0 };
                    }
                    Ok(n) => {
                        self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
                        let mut header = self.header(key, guest_cid, OP_RW);
                        header.len = n as u32;
                        return Produced::Packet(header, n);
                    }
                    // epoll reports the socket again if it still has data.
                    Err(e) if retry_later(&e) => {
                        self.readable = false;
                    }
                    Err(_) => {
                        self.broken = true;
                        return Produced::Nothing;
                    }
                }
            }
        }
        if self.owed & OWE_SHUTDOWN != 0 {
            self.owed &= !OWE_SHUTDOWN;
            self.shutdown_told = true;
            let mut header = self.header(key, guest_cid, OP_SHUTDOWN);
            header.flags = self.shutdown_flags;
            return Produced::Packet(header, 0);
        }
        Produced::Nothing
    }

    /// Whether the guest heard of the connection (a host-initiated one it may not have yet).
    pub fn guest_knows(&self) -> bool {
        self.owed & OWE_REQUEST == 0
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Connecting { deadline } => Some(deadline),
            State::Established => None,
        }
    }
}

fn retry_later(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}
