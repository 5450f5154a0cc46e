//! The test plays the guest through the MMIO registers (testing.rs) and the host programs with
//! real unix sockets in a temporary directory.

use super::connection::{CONN_BUF_SIZE, CREDIT_UPDATE_THRESHOLD};
use super::muxer::MAX_PENDING_RSTS;
use super::packet::*;
use super::*;
use crate::devices::virtio::testing::{memory, Driver, DATA, STATUS};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER_OK;

const GUEST_CID: u64 = 3;
/// What the test guest advertises for its receive buffer unless a test says otherwise.
const GUEST_BUF: u32 = 64 << 10;
/// Rx buffers as Linux posts them: a header and 4 KiB.
const RX_BUF_SIZE: u32 = 4096 + HDR_SIZE as u32;
const RX_BUFS: u64 = 8;
/// Tx packets are built here, past the rx buffers.
const TX_BUF: u64 = DATA + 0x4_0000;
const PATIENCE: Duration = Duration::from_secs(5);

/// A directory for the sockets of one test, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vessel-vsock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn sock(&self) -> PathBuf {
        self.0.join("v.sock")
    }

    /// Where the host application listens for guest connections to `port`.
    fn port_sock(&self, port: u32) -> PathBuf {
        self.0.join(format!("v.sock_{port}"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The guest's side: a driver with the three queues up and rx buffers kept posted.
struct Guest<'m> {
    driver: Driver<'m>,
    rx_seen: usize,
    posted: HashMap<u16, u64>,
    free: Vec<u64>,
}

impl<'m> Guest<'m> {
    fn new(mem: &'m GuestMemory, vsock: Vsock) -> Self {
        Self::with_rx_buffers(mem, vsock, RX_BUFS as usize)
    }

    fn with_rx_buffers(mem: &'m GuestMemory, vsock: Vsock, buffers: usize) -> Self {
        let mut guest = Self {
            driver: Driver::new(mem, Box::new(vsock)),
            rx_seen: 0,
            posted: HashMap::new(),
            free: Vec::new(),
        };
        guest.init(buffers);
        guest
    }

    /// Brings the device up on fresh rings (as after a reboot) and posts `buffers` rx buffers.
    fn init(&mut self, buffers: usize) {
        self.driver.write_mem(0x1000, &[0; 0x3000]);
        let status = self.driver.init(u64::MAX, 3);
        assert_ne!(status & VIRTIO_CONFIG_S_DRIVER_OK, 0);
        self.rx_seen = 0;
        self.posted.clear();
        self.free = (0..RX_BUFS).map(|i| DATA + i * 0x2000).collect();
        self.post_rx(buffers);
    }

    fn post_rx(&mut self, count: usize) {
        for _ in 0..count {
            let addr = self.free.pop().expect("a free rx buffer");
            let head = self.driver.add_chain(RX, &[(addr, RX_BUF_SIZE, true)]);
            self.posted.insert(head, addr);
        }
        self.driver.notify(RX);
    }

    /// The next packet the device put in an rx buffer, if any; the buffer is posted again.
    fn try_recv(&mut self) -> Option<(Header, Vec<u8>)> {
        let (head, len) = *self.driver.used(RX).get(self.rx_seen)?;
        self.rx_seen += 1;
        let addr = self.posted.remove(&(head as u16)).expect("a posted rx buffer");
        let bytes = self.driver.read_mem(addr, len as usize);
        self.free.push(addr);
        self.post_rx(1);
        let header = Header::from_bytes(bytes[..HDR_SIZE].try_into().unwrap());
        assert_eq!(header.len as usize, bytes.len() - HDR_SIZE, "{header:?}");
        Some((header, bytes[HDR_SIZE..].to_vec()))
    }

    /// Waits for the next packet (the backend thread delivers some on its own time).
    fn recv(&mut self) -> (Header, Vec<u8>) {
        let start = Instant::now();
        loop {
            if let Some(packet) = self.try_recv() {
                return packet;
            }
            assert!(start.elapsed() < PATIENCE, "no packet for the guest");
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn expect_nothing(&mut self) {
        thread::sleep(Duration::from_millis(50));
        if let Some(packet) = self.try_recv() {
            panic!("unexpected packet {packet:?}");
        }
    }

    fn tx_used(&self) -> usize {
        self.driver.used(TX).len()
    }

    /// Puts raw bytes on the tx queue, header and payload in separate descriptors as Linux does.
    fn send_bytes(&mut self, bytes: &[u8]) {
        self.send_bytes_at(TX_BUF, bytes);
    }

    /// The same from `addr`, for packets that must outlive the next one (a stalled queue).
    fn send_bytes_at(&mut self, addr: u64, bytes: &[u8]) {
        self.driver.write_mem(addr, bytes);
        let split = bytes.len().min(HDR_SIZE);
        let mut bufs = vec![(addr, split as u32, false)];
        if bytes.len() > split {
            bufs.push((addr + split as u64, (bytes.len() - split) as u32, false));
        }
        self.driver.add_chain(TX, &bufs);
        self.driver.notify(TX);
    }

    fn send(&mut self, mut header: Header, payload: &[u8]) {
        header.len = payload.len() as u32;
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(payload);
        let before = self.tx_used();
        self.send_bytes(&bytes);
        assert_eq!(self.tx_used(), before + 1, "the device took the packet");
    }
}

/// A packet from guest port `src_port` to host port `dst_port`.
fn from_guest(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: GUEST_BUF,
        ..Header::default()
    }
}

/// Asserts a packet from the host side, addressed `src_port` → `dst_port`.
fn assert_to_guest(header: &Header, op: u16, src_port: u32, dst_port: u32) {
    assert_eq!(
        (
            header.op,
            header.src_cid,
            header.dst_cid,
            header.src_port,
            header.dst_port,
            header.type_
        ),
        (op, HOST_CID, GUEST_CID, src_port, dst_port, TYPE_STREAM),
        "{header:?}"
    );
}

fn host_client(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

fn read_line(stream: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0];
    while line.last() != Some(&b'\n') {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "EOF after {line:?}");
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

fn assert_eof(stream: &mut UnixStream) {
    let mut byte = [0];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected EOF, got {other:?}"),
    }
}

/// A host client connected to guest port `guest_port`, the guest having accepted with a
/// receive buffer of `guest_buf`. Returns the client and its host-side port.
fn host_connect(guest: &mut Guest<'_>, path: &Path, guest_port: u32, guest_buf: u32) -> (UnixStream, u32) {
    let mut host = host_client(path);
    host.write_all(format!("CONNECT {guest_port}\n").as_bytes())
        .unwrap();
    let (request, _) = guest.recv();
    let host_port = request.src_port;
    assert_to_guest(&request, OP_REQUEST, host_port, guest_port);
    assert_eq!((request.buf_alloc, request.fwd_cnt), (CONN_BUF_SIZE, 0));
    assert!(host_port >= 1 << 30);
    let mut response = from_guest(OP_RESPONSE, guest_port, host_port);
    response.buf_alloc = guest_buf;
    guest.send(response, &[]);
    assert_eq!(read_line(&mut host), format!("OK {host_port}\n"));
    (host, host_port)
}

#[test]
fn device_identity_and_config() {
    let dir = TempDir::new("identity");
    let vsock = Vsock::new(42, dir.sock()).unwrap();
    assert_eq!(vsock.device_type(), 19);
    assert_eq!(vsock.queue_max_sizes().len(), 3);
    assert_ne!(vsock.features() & 1, 0, "VIRTIO_VSOCK_F_STREAM");
    let mut cid = [0; 8];
    vsock.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 42);
    let mut high = [0; 4];
    vsock.read_config(4, &mut high);
    assert_eq!(high, [0; 4]);
    assert_eq!((vsock.guest_cid(), vsock.uds_path()), (42, dir.sock().as_path()));
}

#[test]
fn construction_errors_name_the_problem() {
    let dir = TempDir::new("errors");
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
        let err = Vsock::new(cid, dir.sock()).err().unwrap();
        assert!(matches!(err, VsockError::InvalidCid(c) if c == cid), "{err}");
    }
    let first = Vsock::new(3, dir.sock()).unwrap();
    let err = Vsock::new(4, dir.sock()).err().unwrap();
    assert!(matches!(err, VsockError::InUse { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.sock().display().to_string()),
        "{err}"
    );
    // The failed attempt must not remove the first device's socket.
    assert!(dir.sock().exists());
    drop(first);
    assert!(!dir.sock().exists(), "dropping the device removes its socket");
    // A socket a killed VMM left (nobody listens) is taken over; a regular file is not.
    drop(std::os::unix::net::UnixListener::bind(dir.sock()).unwrap());
    assert!(dir.sock().exists());
    drop(Vsock::new(3, dir.sock()).expect("a stale socket is reused"));
    std::fs::write(dir.sock(), b"not a socket").unwrap();
    let err = Vsock::new(3, dir.sock()).err().unwrap();
    assert!(matches!(err, VsockError::InUse { .. }), "{err}");
    assert_eq!(
        std::fs::read(dir.sock()).unwrap(),
        b"not a socket",
        "a file that is not a socket stays"
    );
    std::fs::remove_file(dir.sock()).unwrap();
    let missing = dir.0.join("no/such/dir/v.sock");
    let err = Vsock::new(3, &missing).err().unwrap();
    assert!(err.to_string().contains("no/such/dir/v.sock"), "{err}");
}

#[test]
fn host_initiated_connection_relays_both_ways_with_credit() {
    let dir = TempDir::new("host-initiated");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    let (mut host, host_port) = host_connect(&mut guest, &dir.sock(), 1234, GUEST_BUF);

    // Host → guest.
    host.write_all(b"ping").unwrap();
    let (rw, data) = guest.recv();
    assert_to_guest(&rw, OP_RW, host_port, 1234);
    assert_eq!(data, b"ping");
    assert_eq!((rw.buf_alloc, rw.fwd_cnt), (CONN_BUF_SIZE, 0));

    // Guest → host; the credit the device grants comes back as the host takes the bytes.
    let mut rw = from_guest(OP_RW, 1234, host_port);
    rw.fwd_cnt = 4;
    guest.send(rw, b"pong!");
    let mut reply = [0; 5];
    host.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"pong!");
    guest.send(from_guest(OP_CREDIT_REQUEST, 1234, host_port), &[]);
    let (update, _) = guest.recv();
    assert_to_guest(&update, OP_CREDIT_UPDATE, host_port, 1234);
    assert_eq!((update.buf_alloc, update.fwd_cnt), (CONN_BUF_SIZE, 5));

    // A large transfer: past the threshold the device tells the guest of its credit unasked.
    let chunk = vec![0x5a; 60_000];
    let mut reader = host.try_clone().unwrap();
    let total = 3 * chunk.len();
    let drain = thread::spawn(move || {
        let mut got = vec![0; total];
        reader.read_exact(&mut got).unwrap();
        got
    });
    for _ in 0..3 {
        guest.send(from_guest(OP_RW, 1234, host_port), &chunk);
    }
    let (update, _) = guest.recv();
    assert_to_guest(&update, OP_CREDIT_UPDATE, host_port, 1234);
    assert!(update.fwd_cnt >= 5 + CREDIT_UPDATE_THRESHOLD, "{update:?}");
    assert!(drain.join().unwrap().iter().all(|&b| b == 0x5a));
    guest.send(from_guest(OP_CREDIT_REQUEST, 1234, host_port), &[]);
    let (update, _) = guest.recv();
    assert_eq!(update.fwd_cnt as usize, 5 + total);
    guest.expect_nothing();
}

#[test]
fn host_to_guest_data_respects_the_guest_credit() {
    let dir = TempDir::new("guest-credit");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    let (mut host, host_port) = host_connect(&mut guest, &dir.sock(), 77, 8);
    host.write_all(b"abcdefghijklmnopqrst").unwrap();

    let mut received = Vec::new();
    for fwd_cnt in [8, 16] {
        let (rw, data) = guest.recv();
        assert_to_guest(&rw, OP_RW, host_port, 77);
        assert_eq!(data.len(), 8);
        received.extend(data);
        // Out of credit with data waiting: the device asks, then waits.
        let (request, _) = guest.recv();
        assert_to_guest(&request, OP_CREDIT_REQUEST, host_port, 77);
        guest.expect_nothing();
        let mut update = from_guest(OP_CREDIT_UPDATE, 77, host_port);
        update.buf_alloc = 8;
        update.fwd_cnt = fwd_cnt;
        guest.send(update, &[]);
    }
    let (rw, data) = guest.recv();
    assert_eq!(rw.op, OP_RW);
    received.extend(data);
    assert_eq!(received, b"abcdefghijklmnopqrst");
    guest.expect_nothing();
}

#[test]
fn guest_initiated_connection_reaches_the_host_listener() {
    let dir = TempDir::new("guest-initiated");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    let listener = UnixListener::bind(dir.port_sock(5000)).unwrap();
    let echo = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0; 256];
        let mut echoed = 0;
        loop {
            match stream.read(&mut buf).unwrap() {
                0 => return echoed,
                n => {
                    stream.write_all(&buf[..n]).unwrap();
                    echoed += n;
                }
            }
        }
    });

    guest.send(from_guest(OP_REQUEST, 40000, 5000), &[]);
    let (response, _) = guest.recv();
    assert_to_guest(&response, OP_RESPONSE, 5000, 40000);
    assert_eq!((response.buf_alloc, response.fwd_cnt), (CONN_BUF_SIZE, 0));

    guest.send(from_guest(OP_RW, 40000, 5000), b"hello");
    let (rw, data) = guest.recv();
    assert_to_guest(&rw, OP_RW, 5000, 40000);
    assert_eq!(data, b"hello");
    assert_eq!(rw.fwd_cnt, 5);

    // A clean close: SHUTDOWN both ways, the device answers RST and closes the host socket.
    let mut shutdown = from_guest(OP_SHUTDOWN, 40000, 5000);
    shutdown.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    guest.send(shutdown, &[]);
    let (rst, _) = guest.recv();
    assert_to_guest(&rst, OP_RST, 5000, 40000);
    assert_eq!(echo.join().unwrap(), 5);
    guest.expect_nothing();
}

#[test]
fn guest_connection_without_a_listener_is_reset() {
    let dir = TempDir::new("no-listener");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    guest.send(from_guest(OP_REQUEST, 40001, 5001), &[]);
    let (rst, _) = guest.recv();
    assert_to_guest(&rst, OP_RST, 5001, 40001);
    guest.expect_nothing();
}

#[test]
fn guest_rst_closes_the_host_socket() {
    let dir = TempDir::new("guest-rst");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    let (mut host, host_port) = host_connect(&mut guest, &dir.sock(), 1234, GUEST_BUF);
    guest.send(from_guest(OP_RST, 1234, host_port), &[]);
    assert_eof(&mut host);
    guest.expect_nothing();
}

#[test]
fn guest_shutdown_half_closes_then_closes() {
    let dir = TempDir::new("guest-shutdown");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    let (mut host, host_port) = host_connect(&mut guest, &dir.sock(), 1234, GUEST_BUF);

    // The guest sends no more: the host reads EOF but may still write.
    let mut shutdown = from_guest(OP_SHUTDOWN, 1234, host_port);
    shutdown.flags = SHUTDOWN_SEND;
    guest.send(shutdown, &[]);
    assert_eof(&mut host);
    host.write_all(b"late").unwrap();
    let (rw, data) = guest.recv();
    assert_to_guest(&rw, OP_RW, host_port, 1234);
    assert_eq!(data, b"late");

    // Data after the guest's own SHUTDOWN SEND breaks the protocol: reset.
    guest.send(from_guest(OP_RW, 1234, host_port), b"nope");
    let (rst, _) = guest.recv();
    assert_to_guest(&rst, OP_RST, host_port, 1234);
    assert!(host.write_all(b"x").is_err(), "the host socket is closed");
}

#[test]
fn host_close_reaches_the_guest_after_the_data() {
    let dir = TempDir::new("host-close");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    let (mut host, host_port) = host_connect(&mut guest, &dir.sock(), 1234, GUEST_BUF);
    host.write_all(b"bye").unwrap();
    drop(host);
    let (rw, data) = guest.recv();
    assert_to_guest(&rw, OP_RW, host_port, 1234);
    assert_eq!(data, b"bye");
    let (shutdown, _) = guest.recv();
    assert_to_guest(&shutdown, OP_SHUTDOWN, host_port, 1234);
    assert_eq!(shutdown.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    // The connection is gone: the guest's RST is ignored, its data refused.
    guest.send(from_guest(OP_RST, 1234, host_port), &[]);
    guest.expect_nothing();
    guest.send(from_guest(OP_RW, 1234, host_port), b"late");
    let (rst, _) = guest.recv();
    assert_to_guest(&rst, OP_RST, host_port, 1234);
}

#[test]
fn host_half_close_keeps_the_other_direction() {
    let dir = TempDir::new("host-half-close");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    let (mut host, host_port) = host_connect(&mut guest, &dir.sock(), 1234, GUEST_BUF);
    host.shutdown(Shutdown::Write).unwrap();
    let (shutdown, _) = guest.recv();
    assert_to_guest(&shutdown, OP_SHUTDOWN, host_port, 1234);
    assert_eq!(shutdown.flags, SHUTDOWN_SEND);
    guest.send(from_guest(OP_RW, 1234, host_port), b"still here");
    let mut data = [0; 10];
    host.read_exact(&mut data).unwrap();
    assert_eq!(&data, b"still here");
    // Then the host goes away entirely: the guest must stop sending too.
    drop(host);
    let (shutdown, _) = guest.recv();
    assert_eq!(shutdown.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    guest.expect_nothing();
}

#[test]
fn guest_refusing_a_host_connection_closes_the_client() {
    let dir = TempDir::new("refused");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    let mut host = host_client(&dir.sock());
    host.write_all(b"CONNECT 9\n").unwrap();
    let (request, _) = guest.recv();
    guest.send(from_guest(OP_RST, 9, request.src_port), &[]);
    assert_eof(&mut host);
    // Garbage instead of a CONNECT line is closed too, with nothing sent to the guest.
    let mut garbage = host_client(&dir.sock());
    garbage.write_all(b"HELLO\n").unwrap();
    assert_eof(&mut garbage);
    guest.expect_nothing();
}

#[test]
fn handshakes_time_out() {
    let dir = TempDir::new("timeout");
    let mem = memory();
    let vsock = Vsock::new(GUEST_CID, dir.sock()).unwrap();
    vsock.set_handshake_timeout(Duration::from_millis(100));
    let mut guest = Guest::new(&mem, vsock);
    // A client that never finishes its line is closed.
    let mut silent = host_client(&dir.sock());
    silent.write_all(b"CONN").unwrap();
    assert_eof(&mut silent);
    // A guest that never answers REQUEST: the client is closed and the guest reset.
    let mut host = host_client(&dir.sock());
    host.write_all(b"CONNECT 7\n").unwrap();
    let (request, _) = guest.recv();
    assert_eq!(request.op, OP_REQUEST);
    assert_eof(&mut host);
    let (rst, _) = guest.recv();
    assert_to_guest(&rst, OP_RST, request.src_port, 7);
}

#[test]
fn malformed_packets_are_dropped() {
    let dir = TempDir::new("malformed");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    let listener = UnixListener::bind(dir.port_sock(5000)).unwrap();
    listener.set_nonblocking(true).unwrap();

    // A short header.
    guest.send_bytes(&from_guest(OP_REQUEST, 1, 5000).to_bytes()[..20]);
    // Another socket type, and a forged source CID.
    let mut seqpacket = from_guest(OP_REQUEST, 2, 5000);
    seqpacket.type_ = 2;
    guest.send(seqpacket, &[]);
    let mut forged = from_guest(OP_REQUEST, 3, 5000);
    forged.src_cid = 7;
    guest.send(forged, &[]);
    // A length the chain does not hold, and one beyond any packet.
    let mut long = from_guest(OP_RW, 4, 5000).to_bytes();
    long[24..28].copy_from_slice(&100u32.to_le_bytes());
    guest.send_bytes(&[&long[..], &[0; 10]].concat());
    let mut huge = from_guest(OP_RW, 4, 5000);
    huge.len = u32::MAX;
    guest.send_bytes(&huge.to_bytes());
    // A chain the device could only write to.
    guest.driver.add_chain(TX, &[(TX_BUF, 64, true)]);
    guest.driver.notify(TX);
    assert_eq!(guest.tx_used(), 6, "every chain is returned");
    guest.expect_nothing();
    assert_eq!(
        listener.accept().err().map(|e| e.kind()),
        Some(ErrorKind::WouldBlock),
        "nothing connected to the host"
    );

    // Well-formed but for no one: reset, from the address the guest used.
    guest.send(from_guest(OP_RW, 5, 6000), b"data");
    let (rst, _) = guest.recv();
    assert_to_guest(&rst, OP_RST, 6000, 5);
    let mut elsewhere = from_guest(OP_REQUEST, 6, 5000);
    elsewhere.dst_cid = 5;
    guest.send(elsewhere, &[]);
    let (rst, _) = guest.recv();
    assert_eq!(
        (rst.op, rst.src_cid, rst.dst_cid, rst.src_port, rst.dst_port),
        (OP_RST, 5, GUEST_CID, 5000, 6)
    );
    // An RST for no one is not answered.
    guest.send(from_guest(OP_RST, 5, 6000), &[]);
    guest.expect_nothing();

    // The device still works.
    guest.send(from_guest(OP_REQUEST, 8, 5000), &[]);
    let (response, _) = guest.recv();
    assert_to_guest(&response, OP_RESPONSE, 5000, 8);
}

#[test]
fn rsts_wait_for_rx_buffers_and_hold_back_tx() {
    let dir = TempDir::new("backpressure");
    let mem = memory();
    let mut guest = Guest::with_rx_buffers(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap(), 0);
    let extra = 5;
    let count = MAX_PENDING_RSTS + extra;
    for port in 0..count as u32 {
        let addr = TX_BUF + u64::from(port) * HDR_SIZE as u64;
        guest.send_bytes_at(addr, &from_guest(OP_RW, 100 + port, 6000).to_bytes());
    }
    // With no rx buffers the RSTs queue up to the bound; then tx waits.
    assert_eq!(guest.tx_used(), MAX_PENDING_RSTS);
    guest.post_rx(RX_BUFS as usize);
    let mut ports = Vec::new();
    while ports.len() < count {
        let (rst, _) = guest.recv();
        assert_eq!(rst.op, OP_RST);
        ports.push(rst.dst_port);
    }
    assert_eq!(ports, (100..100 + count as u32).collect::<Vec<_>>());
    assert_eq!(guest.tx_used(), count);
    guest.expect_nothing();
}

#[test]
fn reset_stops_the_backend_and_closes_sockets() {
    let dir = TempDir::new("reset");
    let mem = memory();
    let vsock = Vsock::new(GUEST_CID, dir.sock()).unwrap();
    let running = vsock.backend.running();
    let shared = vsock.muxer.clone();
    assert!(
        !running.load(Ordering::SeqCst),
        "no thread before the driver is up"
    );
    let mut guest = Guest::new(&mem, vsock);
    assert!(running.load(Ordering::SeqCst));

    let (mut host, _) = host_connect(&mut guest, &dir.sock(), 1234, GUEST_BUF);
    let listener = UnixListener::bind(dir.port_sock(5000)).unwrap();
    guest.send(from_guest(OP_REQUEST, 40000, 5000), &[]);
    assert_eq!(guest.recv().0.op, OP_RESPONSE);
    let (mut app, _) = listener.accept().unwrap();
    app.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut pending = host_client(&dir.sock());
    pending.write_all(b"CONN").unwrap();
    let start = Instant::now();
    while muxer::lock(&shared).connection_count() < 3 {
        assert!(start.elapsed() < PATIENCE);
        thread::sleep(Duration::from_millis(2));
    }

    guest.driver.write32(STATUS, 0);
    assert!(!running.load(Ordering::SeqCst), "reset ends the thread");
    assert_eq!(muxer::lock(&shared).connection_count(), 0);
    for stream in [&mut host, &mut app, &mut pending] {
        assert_eof(stream);
    }

    // The listener survives the reset; the next driver serves the client that waited.
    let mut early = host_client(&dir.sock());
    early.write_all(b"CONNECT 1234\n").unwrap();
    guest.init(RX_BUFS as usize);
    assert!(running.load(Ordering::SeqCst));
    let (request, _) = guest.recv();
    assert_eq!((request.op, request.dst_port), (OP_REQUEST, 1234));

    drop(guest);
    assert!(!running.load(Ordering::SeqCst));
    assert!(!dir.sock().exists(), "the socket file goes with the device");
    drop(shared);
    assert_eof(&mut early);
}

#[test]
fn closed_connections_leave_nothing_behind() {
    let dir = TempDir::new("no-leaks");
    let mem = memory();
    let vsock = Vsock::new(GUEST_CID, dir.sock()).unwrap();
    let shared = vsock.muxer.clone();
    let mut guest = Guest::new(&mem, vsock);
    let listener = UnixListener::bind(dir.port_sock(5000)).unwrap();
    for round in 0..4u32 {
        // Closed by the guest's RST.
        let (mut host, host_port) = host_connect(&mut guest, &dir.sock(), 1000 + round, GUEST_BUF);
        guest.send(from_guest(OP_RST, 1000 + round, host_port), &[]);
        assert_eof(&mut host);
        // Closed by the host.
        let (host, host_port) = host_connect(&mut guest, &dir.sock(), 2000 + round, GUEST_BUF);
        drop(host);
        let (shutdown, _) = guest.recv();
        assert_to_guest(&shutdown, OP_SHUTDOWN, host_port, 2000 + round);
        // Guest-initiated, closed by the guest's SHUTDOWN.
        guest.send(from_guest(OP_REQUEST, 3000 + round, 5000), &[]);
        assert_eq!(guest.recv().0.op, OP_RESPONSE);
        let (mut app, _) = listener.accept().unwrap();
        let mut shutdown = from_guest(OP_SHUTDOWN, 3000 + round, 5000);
        shutdown.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        guest.send(shutdown, &[]);
        assert_eq!(guest.recv().0.op, OP_RST);
        assert_eof(&mut app);
        // A client that gives up before its CONNECT line.
        drop(host_client(&dir.sock()));
    }
    let start = Instant::now();
    while !muxer::lock(&shared).is_idle() {
        assert!(start.elapsed() < PATIENCE, "connections left behind");
        thread::sleep(Duration::from_millis(2));
    }
    guest.expect_nothing();
}

#[test]
fn header_only_rx_buffers_do_not_block_data() {
    let dir = TempDir::new("small-rx");
    let mem = memory();
    let mut guest = Guest::with_rx_buffers(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap(), 0);
    let listener = UnixListener::bind(dir.port_sock(5000)).unwrap();
    guest.send(from_guest(OP_REQUEST, 40000, 5000), &[]);
    let (mut app, _) = listener.accept().unwrap();
    // A header-sized buffer takes the RESPONSE.
    let small = DATA + 0x3_0000;
    guest.driver.add_chain(RX, &[(small, HDR_SIZE as u32, true)]);
    guest.driver.notify(RX);
    assert_eq!(guest.driver.used(RX).len(), 1);
    let header = Header::from_bytes(&guest.driver.read_mem(small, HDR_SIZE).try_into().unwrap());
    assert_to_guest(&header, OP_RESPONSE, 5000, 40000);

    // Data cannot fit the next such buffer: it comes back empty instead of blocking the ring.
    app.write_all(b"data").unwrap();
    guest.driver.add_chain(RX, &[(small, HDR_SIZE as u32, true)]);
    guest.driver.notify(RX);
    let start = Instant::now();
    while guest.driver.used(RX).len() < 2 {
        assert!(start.elapsed() < PATIENCE);
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(guest.driver.used(RX)[1].1, 0);
    guest.rx_seen = 2;
    guest.post_rx(1);
    let (rw, data) = guest.recv();
    assert_to_guest(&rw, OP_RW, 5000, 40000);
    assert_eq!(data, b"data");
}

#[test]
fn a_restored_device_resets_the_guests_connections_and_works_on() {
    use crate::devices::virtio::mmio::MmioTransport;
    let dir = TempDir::new("restore");
    let mem = memory();
    let mut guest = Guest::new(&mem, Vsock::new(GUEST_CID, dir.sock()).unwrap());
    // An event buffer, posted as Linux posts them; filled with a non-event so a write shows.
    let event_buf = DATA + 0x3_8000;
    guest.driver.write_mem(event_buf, &[0xff; 4]);
    guest.driver.add_chain(EVENT, &[(event_buf, 4, true)]);
    guest.driver.notify(EVENT);
    let (mut host, _) = host_connect(&mut guest, &dir.sock(), 1000, GUEST_BUF);
    let saved = guest
        .driver
        .transport
        .save()
        .expect("a vsock device's state can be saved");
    assert!(saved.active && saved.queues.len() == 3);
    assert!(guest.driver.used(EVENT).is_empty(), "no event before the restore");

    // The process ends: the device, its connections and its socket file go.
    let irq = guest.driver.irq.clone();
    guest.driver.transport = MmioTransport::new(
        mem.clone(),
        Box::new(crate::devices::virtio::Rng::new()),
        irq.clone(),
    );
    assert_eof(&mut host);
    while guest.driver.irq_fired() {}
    // A new process's device takes the saved state and tells the guest its connections are gone.
    let vsock = Vsock::new(GUEST_CID, dir.sock()).unwrap();
    guest.driver.transport = MmioTransport::new(mem.clone(), Box::new(vsock), irq);
    assert!(
        guest.driver.transport.restore(&saved),
        "the saved state fits a new device"
    );
    assert_eq!(
        guest.driver.used(EVENT).len(),
        1,
        "one event: the transport reset"
    );
    assert_eq!(guest.driver.used(EVENT)[0].1, 4);
    assert_eq!(
        guest.driver.read_mem(event_buf, 4),
        [0; 4],
        "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET"
    );
    assert!(guest.driver.irq_fired());
    // And it works on: a new host connection reaches the guest on the restored rings.
    let (mut host, host_port) = host_connect(&mut guest, &dir.sock(), 1001, GUEST_BUF);
    host.write_all(b"after").unwrap();
    let (rw, data) = guest.recv();
    assert_to_guest(&rw, OP_RW, host_port, 1001);
    assert_eq!(data, b"after");
}
