//! Drives the NIC through the MMIO registers as Linux's virtio_net would, against a real tap.
//!
//! Each tap test runs in a thread of its own that first moves into a fresh network namespace
//! (root needed), so nothing touches the host's network and everything vanishes with the thread.
//! The host side is the kernel's stack in that namespace: the tap gets 10.0.0.1/24, and a static
//! neighbour entry maps the guest's 10.0.0.2 to its MAC so no ARP is needed.

use super::device::{random_mac, tun_offloads};
use super::*;
use crate::devices::virtio::testing::{memory, Driver, DATA, INTERRUPT_STATUS, STATUS};
use crate::devices::virtio::{VirtioDevice, BASE_FEATURES};
use crate::GuestMemory;
use std::ffi::CString;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use virtio_bindings::virtio_net::*;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const RXQ: usize = 0;
const TXQ: usize = 1;
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Receive buffers, one page each.
const RX_BUF: u64 = DATA;
/// Frames the guest transmits.
const TX_BUF: u64 = DATA + 0x4_0000;
const TIMEOUT: Duration = Duration::from_secs(5);

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Runs `body` in a new thread inside a new network namespace of its own.
fn in_netns(body: impl FnOnce() + Send + 'static) {
    let result = thread::spawn(move || {
        // SAFETY: unshare takes no pointers; it moves only this thread to a new namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {} (the tap tests need root)",
            std::io::Error::last_os_error()
        );
        body();
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Gives the tap the host's side of the link: MAC, 10.0.0.1/24, up, and the guest as a static
/// neighbour. IPv6 is off on it so no router solicitations or DAD probes take the guest's buffers.
fn host_side(tap: &str, subnet: u8, guest_mac: [u8; 6]) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), "1");
    ip(&["link", "set", "dev", tap, "address", &mac_str(HOST_MAC)]);
    ip(&["addr", "add", &format!("10.0.{subnet}.1/24"), "dev", tap]);
    ip(&["link", "set", "dev", tap, "up"]);
    let guest = format!("10.0.{subnet}.2");
    let lladdr = mac_str(guest_mac);
    ip(&[
        "neigh",
        "add",
        &guest,
        "lladdr",
        &lladdr,
        "dev",
        tap,
        "nud",
        "permanent",
    ]);
}

/// A NIC on tap `tap` whose driver accepted `features` (BASE_FEATURES added), brought up to
/// DRIVER_OK. The device hears of the features through `ack_features`, as at FEATURES_OK.
fn nic<'m>(mem: &'m GuestMemory, tap: &str, features: u64) -> Driver<'m> {
    let mut net = Net::new(tap, Some(GUEST_MAC)).unwrap();
    assert_eq!(net.tap_name(), tap);
    net.ack_features(BASE_FEATURES | features);
    let mut driver = Driver::new(mem, Box::new(net));
    let status = driver.init(BASE_FEATURES | features, 2);
    assert_eq!(status & 0x4, 0x4, "DRIVER_OK set");
    driver
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Posts `count` receive chains of `len` writable bytes, one page apart, and notifies.
fn post_rx(driver: &mut Driver, first: u64, count: u64, len: u32) {
    for i in first..first + count {
        driver.add_chain(RXQ, &[(RX_BUF + i * 0x1000, len, true)]);
    }
    driver.notify(RXQ);
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame holding an IPv4 UDP datagram; `udp_csum` goes into the UDP header as is.
fn udp_frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8], udp_csum: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&HOST_MAC);
    frame.extend_from_slice(&GUEST_MAC);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.0.octets());
    ip.extend_from_slice(&dst.0.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&src.1.to_be_bytes());
    frame.extend_from_slice(&dst.1.to_be_bytes());
    frame.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&udp_csum.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Writes header and frame to TX_BUF and offers them as one chain of two descriptors.
fn transmit(driver: &mut Driver, header: [u8; VNET_HDR_LEN], frame: &[u8]) {
    driver.write_mem(TX_BUF, &header);
    driver.write_mem(TX_BUF + 0x100, frame);
    let bufs = [
        (TX_BUF, VNET_HDR_LEN as u32, false),
        (TX_BUF + 0x100, frame.len() as u32, false),
    ];
    driver.add_chain(TXQ, &bufs);
    driver.notify(TXQ);
}

fn host_socket(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind((HOST_IP, port)).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket
}

/// A received frame as the guest sees it: header fields and the frame itself.
struct Received {
    flags: u8,
    gso_type: u8,
    csum_start: u16,
    csum_offset: u16,
    num_buffers: u16,
    frame: Vec<u8>,
}

/// Reads the packet whose first buffer is the used entry `index` and spans the next entries.
fn received(driver: &Driver, index: usize, addr_of: impl Fn(u32) -> u64) -> Received {
    let used = driver.used(RXQ);
    let (head, len) = used[index];
    let header = driver.read_mem(addr_of(head), VNET_HDR_LEN);
    let u16_at = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
    let num_buffers = u16_at(10);
    let first = (len as usize).saturating_sub(VNET_HDR_LEN);
    let mut frame = driver.read_mem(addr_of(head) + VNET_HDR_LEN as u64, first);
    let end = (index + usize::from(num_buffers)).clamp(index + 1, used.len());
    for &(head, len) in &used[index + 1..end] {
        frame.extend(driver.read_mem(addr_of(head), len as usize));
    }
    Received {
        flags: header[0],
        gso_type: header[1],
        csum_start: u16_at(6),
        csum_offset: u16_at(8),
        num_buffers,
        frame,
    }
}

/// The UDP destination port of an IPv4 frame, if it is one.
fn udp_dport(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 42 && frame[12..14] == [8, 0] && frame[23] == 17)
        .then(|| u16::from_be_bytes([frame[36], frame[37]]))
}

/// Chain heads map to buffers one page apart: the test posts chain i (one descriptor) at page i.
fn rx_page(head: u32) -> u64 {
    RX_BUF + u64::from(head) * 0x1000
}

fn thread_running(name: &str) -> bool {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .any(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name)
        })
}

/// CPU time (user + system, in clock ticks) of this process's thread called `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name) {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
            let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            return fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        }
    }
    panic!("no thread {name}");
}

/// Whether interface `name` exists in this thread's network namespace.
fn interface_exists(name: &str) -> bool {
    let name = CString::new(name).unwrap();
    // SAFETY: a NUL-terminated string we own; the call only reads it.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// A legacy ethtool "get" command (ETHTOOL_GTXCSUM, ETHTOOL_GTSO) on interface `name`.
fn ethtool_get(name: &str, cmd: u32) -> bool {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue { cmd, data: 0 };
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the ifreq and writes `value`, both alive for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) };
    assert_eq!(rc, 0, "SIOCETHTOOL {cmd:#x}: {}", std::io::Error::last_os_error());
    value.data != 0
}
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_GTSO: u32 = 0x1e;

#[test]
fn features_config_and_offload_mapping() {
    let csum = bit(VIRTIO_NET_F_GUEST_CSUM);
    assert_eq!(tun_offloads(0), 0);
    assert_eq!(
        tun_offloads(bit(VIRTIO_NET_F_GUEST_TSO4)),
        0,
        "TSO needs GUEST_CSUM"
    );
    assert_eq!(tun_offloads(csum), libc::TUN_F_CSUM);
    let all = csum | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6);
    assert_eq!(
        tun_offloads(all),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
    );
    // Host offloads need nothing from the tap's reader.
    assert_eq!(
        tun_offloads(bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4)),
        0
    );

    for _ in 0..8 {
        let mac = random_mac("tap0");
        assert_eq!(mac[0] & 0x03, 0x02, "unicast, locally administered: {mac:02x?}");
    }
    assert_ne!(random_mac("tap0"), random_mac("tap0"));

    in_netns(|| {
        let net = Net::new("vcfg0", None).unwrap();
        let mac = net.mac();
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_eq!(net.device_type(), 1);
        assert_eq!(net.queue_max_sizes().len(), 2, "rx and tx, no control queue");
        let features = net.features();
        for f in [
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_MRG_RXBUF,
        ] {
            assert_ne!(features & bit(f), 0, "feature {f}");
        }
        assert_eq!(features & bit(VIRTIO_NET_F_CTRL_VQ), 0);
        assert_eq!(features & bit(VIRTIO_NET_F_MQ), 0);
        let mut config = [0u8; 8];
        net.read_config(0, &mut config);
        assert_eq!(config[..6], mac);
        assert_eq!(
            u16::from_le_bytes([config[6], config[7]]),
            VIRTIO_NET_S_LINK_UP as u16
        );
        let mut status = [0u8; 2];
        net.read_config(6, &mut status);
        assert_eq!(status, [1, 0]);
    });
}

#[test]
fn tap_open_errors_name_the_tap() {
    let err = Tap::open("a-name-far-too-long").unwrap_err();
    assert!(matches!(err, NetError::NameTooLong { .. }), "{err}");
    assert!(err.to_string().contains("a-name-far-too-long"), "{err}");
    for bad in ["", "..", "a/b", "a b", "a:b"] {
        let err = Tap::open(bad).unwrap_err();
        assert!(matches!(err, NetError::InvalidName { .. }), "{bad:?}: {err}");
    }
    in_netns(|| {
        let tap = Tap::open("vbusy0").unwrap();
        let err = Tap::open("vbusy0").unwrap_err();
        assert!(matches!(err, NetError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("vbusy0"), "{err}");
        drop(tap);
        // The loopback device exists in every namespace and is no tap.
        let err = Tap::open("lo").unwrap_err();
        assert!(matches!(err, NetError::NotATap { .. }), "{err}");
        // A pattern gets a number from the kernel.
        let tap = Tap::open("vpat%d").unwrap();
        assert_eq!(tap.name(), "vpat0");
    });
}

#[test]
fn tx_frame_reaches_the_host_stack() {
    in_netns(|| {
        let mem = memory();
        let mut driver = nic(&mem, "vtx0", 0);
        host_side("vtx0", 0, GUEST_MAC);
        let socket = host_socket(5000);
        let payload = b"hello from the guest";
        let frame = udp_frame((GUEST_IP, 4000), (HOST_IP, 5000), payload, 0);
        transmit(&mut driver, [0; VNET_HDR_LEN], &frame);

        // Transmit is synchronous: the chain is back before notify returns.
        assert_eq!(driver.used(TXQ), vec![(0, 0)]);
        assert!(driver.irq_fired());
        assert_eq!(driver.read32(INTERRUPT_STATUS) & 1, 1);
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], payload);
        assert_eq!(from, SocketAddr::from((GUEST_IP, 4000)));
        let metrics = driver.transport.metrics();
        assert_eq!((metrics.kind, metrics.id.as_str()), ("net", "vtx0"));
        assert_eq!((metrics.notifications, metrics.interrupts), (1, 1));
        let counters = metrics.counters;
        assert_eq!(
            (
                counters["tx_frames"],
                counters["tx_bytes"],
                counters["tx_dropped"]
            ),
            (1, frame.len() as u64, 0),
            "{counters:?}"
        );
    });
}

#[test]
fn a_frame_in_more_pieces_than_gathered_still_goes_out() {
    in_netns(|| {
        let mem = memory();
        let mut driver = nic(&mem, "vtxsg0", 0);
        host_side("vtxsg0", 0, GUEST_MAC);
        let socket = host_socket(5008);
        let payload = [b'p'; 100];
        let frame = udp_frame((GUEST_IP, 4000), (HOST_IP, 5008), &payload, 0);
        driver.write_mem(TX_BUF, &[0; VNET_HDR_LEN]);
        driver.write_mem(TX_BUF + 0x100, &frame);
        // The header, then the frame one byte a descriptor: more pieces than one writev takes.
        let mut bufs = vec![(TX_BUF, VNET_HDR_LEN as u32, false)];
        bufs.extend((0..frame.len() as u64).map(|i| (TX_BUF + 0x100 + i, 1, false)));
        assert!(bufs.len() > 64);
        driver.add_indirect_chain(TXQ, TX_BUF + 0x1_0000, &bufs);
        driver.notify(TXQ);
        assert_eq!(driver.used(TXQ).len(), 1);
        let mut buf = [0u8; 128];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], payload);
        assert_eq!(driver.transport.metrics().counters["tx_frames"], 1);
    });
}

/// With KVM's notification eventfds (as a VM gives them), the NIC's thread serves both queues:
/// receive buffers and transmitted frames are taken without any MMIO exit, and counted.
#[test]
fn the_nics_thread_serves_both_queues_from_notification_eventfds() {
    in_netns(|| {
        let mem = memory();
        let mut net = Net::new("vev0", Some(GUEST_MAC)).unwrap();
        let events = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        assert!(
            net.take_queue_events(&events),
            "a NIC waits on its notifications itself"
        );
        net.ack_features(BASE_FEATURES);
        let mut driver = Driver::new(&mem, Box::new(net));
        driver.init(BASE_FEATURES, 2);
        host_side("vev0", 0, GUEST_MAC);
        let socket = host_socket(5009);
        // Receive buffers, offered through the receive queue's eventfd.
        for i in 0..4 {
            driver.add_chain(RXQ, &[(RX_BUF + i * 0x1000, 2048, true)]);
        }
        events[RXQ].write(1).unwrap();
        socket.send_to(b"answer", (GUEST_IP, 7009)).unwrap();
        let frame = udp_frame((GUEST_IP, 4000), (HOST_IP, 5009), b"question", 0);
        driver.write_mem(TX_BUF, &[0; VNET_HDR_LEN]);
        driver.write_mem(TX_BUF + 0x100, &frame);
        driver.add_chain(
            TXQ,
            &[
                (TX_BUF, VNET_HDR_LEN as u32, false),
                (TX_BUF + 0x100, frame.len() as u32, false),
            ],
        );
        events[TXQ].write(1).unwrap();
        wait_for("the transmit chain back", || driver.used(TXQ).len() == 1);
        let mut buf = [0u8; 16];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"question");
        wait_for("the answer in the guest", || {
            let used = driver.used(RXQ);
            (0..used.len()).any(|i| udp_dport(&received(&driver, i, rx_page).frame) == Some(7009))
        });
        wait_for("the interrupt", || driver.irq_fired());
        let metrics = driver.transport.metrics();
        assert_eq!(metrics.notifications, 2, "both eventfd notifications counted");
        assert_eq!(metrics.counters["tx_frames"], 1);
    });
}

#[test]
fn tx_header_passes_to_the_tap() {
    in_netns(|| {
        let mem = memory();
        let mut driver = nic(&mem, "vtxcs0", bit(VIRTIO_NET_F_CSUM));
        host_side("vtxcs0", 0, GUEST_MAC);
        let socket = host_socket(5001);

        // A wrong UDP checksum without NEEDS_CSUM: the host's UDP drops it.
        let bad = udp_frame((GUEST_IP, 4000), (HOST_IP, 5001), b"bad checksum", 0xdead);
        transmit(&mut driver, [0; VNET_HDR_LEN], &bad);
        // The same with NEEDS_CSUM (start 34, offset 6): the checksum is the device's to finish,
        // so the host accepts it: proof the header reached the tap as written.
        let partial = udp_frame((GUEST_IP, 4000), (HOST_IP, 5001), b"partial checksum", 0xdead);
        let mut header = [0u8; VNET_HDR_LEN];
        header[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        header[6..8].copy_from_slice(&34u16.to_le_bytes());
        header[8..10].copy_from_slice(&6u16.to_le_bytes());
        transmit(&mut driver, header, &partial);

        assert_eq!(driver.used(TXQ).len(), 2);
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"partial checksum");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let err = socket.recv(&mut buf).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
    });
}

#[test]
fn rx_frame_lands_in_a_posted_buffer_with_header_and_interrupt() {
    in_netns(|| {
        let mem = memory();
        let mut driver = nic(&mem, "vrx0", 0);
        host_side("vrx0", 0, GUEST_MAC);
        post_rx(&mut driver, 0, 4, 2048);
        let socket = host_socket(5002);
        socket.send_to(b"hello guest", (GUEST_IP, 7000)).unwrap();

        let mut found = None;
        wait_for("the datagram in the guest", || {
            let used = driver.used(RXQ);
            found = (0..used.len()).find(|&i| udp_dport(&received(&driver, i, rx_page).frame) == Some(7000));
            found.is_some()
        });
        let rx = received(&driver, found.unwrap(), rx_page);
        assert_eq!((rx.flags, rx.gso_type, rx.num_buffers), (0, 0, 1));
        let frame = &rx.frame;
        assert_eq!(frame[0..6], GUEST_MAC);
        assert_eq!(frame[6..12], HOST_MAC);
        assert_eq!(checksum(&frame[14..34]), 0, "valid IPv4 header checksum");
        assert_eq!(frame[26..30], HOST_IP.octets());
        assert_eq!(frame[30..34], GUEST_IP.octets());
        assert_eq!(u16::from_be_bytes([frame[34], frame[35]]), 5002);
        assert_eq!(&frame[42..], b"hello guest");
        wait_for("the interrupt", || driver.irq_fired());
        assert_eq!(driver.read32(INTERRUPT_STATUS) & 1, 1);
        // The host may have sent more (neighbour discovery): at least this frame was counted.
        let counters = driver.transport.metrics().counters;
        assert!(counters["rx_frames"] >= 1, "{counters:?}");
        assert!(counters["rx_bytes"] >= frame.len() as u64, "{counters:?}");
        assert_eq!(counters["rx_dropped"], 0, "{counters:?}");
    });
}

#[test]
fn rx_waits_for_buffers_until_the_guest_notifies() {
    in_netns(|| {
        let mem = memory();
        let mut driver = nic(&mem, "vrxw0", 0);
        host_side("vrxw0", 0, GUEST_MAC);
        let socket = host_socket(5003);
        socket.send_to(b"early", (GUEST_IP, 7001)).unwrap();
        thread::sleep(Duration::from_millis(100));
        assert!(driver.used(RXQ).is_empty());
        assert!(!driver.irq_fired());

        // Buffers posted without a notification are not noticed (the device asked for one)...
        driver.add_chain(RXQ, &[(rx_page(0), 2048, true)]);
        thread::sleep(Duration::from_millis(100));
        assert!(driver.used(RXQ).is_empty());
        // ...and the notification wakes the backend, which delivers the frame it held.
        driver.notify(RXQ);
        wait_for("the held frame", || !driver.used(RXQ).is_empty());
        assert_eq!(udp_dport(&received(&driver, 0, rx_page).frame), Some(7001));
        wait_for("the interrupt", || driver.irq_fired());

        // With buffers posted again, frames flow without further notifications.
        post_rx(&mut driver, 1, 4, 2048);
        socket.send_to(b"later", (GUEST_IP, 7002)).unwrap();
        wait_for("the second datagram", || {
            let used = driver.used(RXQ);
            (0..used.len()).any(|i| udp_dport(&received(&driver, i, rx_page).frame) == Some(7002))
        });
    });
}

#[test]
fn receive_thread_sleeps_without_buffers_or_tap() {
    in_netns(|| {
        let mem = memory();
        let mut driver = nic(&mem, "vidle0", 0);
        host_side("vidle0", 0, GUEST_MAC);
        let socket = host_socket(5009);
        for _ in 0..10 {
            socket.send_to(b"queued", (GUEST_IP, 7009)).unwrap();
        }
        wait_for("the receive thread", || thread_running("net-vidle0"));
        let before = thread_cpu_ticks("net-vidle0");
        thread::sleep(Duration::from_millis(500));
        // A thread polling a readable tap it cannot drain would burn ~50 ticks here.
        let spent = thread_cpu_ticks("net-vidle0") - before;
        assert!(spent <= 5, "the idle receive thread used {spent} ticks in 0.5 s");

        // With buffers the queued frames flow; then the interface is deleted under the device:
        // the tap reports an error forever, which must not make the thread spin either.
        post_rx(&mut driver, 0, 16, 2048);
        wait_for("the queued frames", || driver.used(RXQ).len() >= 10);
        ip(&["link", "del", "vidle0"]);
        let before = thread_cpu_ticks("net-vidle0");
        thread::sleep(Duration::from_millis(500));
        let spent = thread_cpu_ticks("net-vidle0") - before;
        assert!(
            spent <= 5,
            "the receive thread of a deleted tap used {spent} ticks in 0.5 s"
        );
        let frame = udp_frame((GUEST_IP, 4000), (HOST_IP, 5009), b"nowhere", 0);
        transmit(&mut driver, [0; VNET_HDR_LEN], &frame);
        assert_eq!(
            driver.used(TXQ).len(),
            1,
            "transmit completes, the frame is dropped"
        );
    });
}

#[test]
fn rx_mergeable_frame_spans_buffers() {
    in_netns(|| {
        let mem = memory();
        let mut driver = nic(&mem, "vmrg0", bit(VIRTIO_NET_F_MRG_RXBUF));
        host_side("vmrg0", 0, GUEST_MAC);
        // 12 + 14 + 20 + 8 + 600 = 654 bytes: six buffers of 128.
        post_rx(&mut driver, 0, 8, 128);
        let socket = host_socket(5004);
        let payload: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
        socket.send_to(&payload, (GUEST_IP, 7003)).unwrap();

        let mut found = None;
        wait_for("the datagram in the guest", || {
            let used = driver.used(RXQ);
            let mut i = 0;
            while i < used.len() {
                let rx = received(&driver, i, rx_page);
                if udp_dport(&rx.frame) == Some(7003) {
                    found = Some(i);
                    return true;
                }
                i += usize::from(rx.num_buffers.max(1));
            }
            false
        });
        let index = found.unwrap();
        let rx = received(&driver, index, rx_page);
        assert_eq!(rx.num_buffers, 6);
        let used = driver.used(RXQ);
        let lens: Vec<u32> = used[index..index + 6].iter().map(|&(_, len)| len).collect();
        assert_eq!(lens, [128, 128, 128, 128, 128, 14]);
        assert_eq!(&rx.frame[42..], &payload[..]);
    });
}

#[test]
fn negotiated_offloads_reach_the_tap() {
    in_netns(|| {
        let mem = memory();
        let plain = nic(&mem, "voff0", 0);
        assert!(!ethtool_get("voff0", ETHTOOL_GTXCSUM));
        assert!(!ethtool_get("voff0", ETHTOOL_GTSO));
        drop(plain);

        let offloads = bit(VIRTIO_NET_F_CSUM)
            | bit(VIRTIO_NET_F_GUEST_CSUM)
            | bit(VIRTIO_NET_F_GUEST_TSO4)
            | bit(VIRTIO_NET_F_GUEST_TSO6)
            | bit(VIRTIO_NET_F_HOST_TSO4)
            | bit(VIRTIO_NET_F_HOST_TSO6);
        let mut driver = nic(&mem, "voff1", offloads);
        assert!(ethtool_get("voff1", ETHTOOL_GTXCSUM));
        assert!(ethtool_get("voff1", ETHTOOL_GTSO));

        // The host now leaves UDP checksums to the guest: the header says NEEDS_CSUM.
        host_side("voff1", 0, GUEST_MAC);
        post_rx(&mut driver, 0, 4, 2048);
        let socket = host_socket(5005);
        socket.send_to(b"finish my checksum", (GUEST_IP, 7004)).unwrap();
        let mut found = None;
        wait_for("the datagram in the guest", || {
            let used = driver.used(RXQ);
            found = (0..used.len()).find(|&i| udp_dport(&received(&driver, i, rx_page).frame) == Some(7004));
            found.is_some()
        });
        let rx = received(&driver, found.unwrap(), rx_page);
        assert_eq!(
            u32::from(rx.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM,
            VIRTIO_NET_HDR_F_NEEDS_CSUM
        );
        assert_eq!((rx.csum_start, rx.csum_offset), (34, 6));

        // A reset forgets the features: the next activation, told nothing, turns offloads off.
        driver.write32(STATUS, 0);
        driver.init(BASE_FEATURES, 2);
        assert!(!ethtool_get("voff1", ETHTOOL_GTXCSUM));
        assert!(!ethtool_get("voff1", ETHTOOL_GTSO));
    });
}

#[test]
fn malformed_chains_do_not_stop_the_device() {
    in_netns(|| {
        let mem = memory();
        let mut driver = nic(&mem, "vbad0", 0);
        host_side("vbad0", 0, GUEST_MAC);
        let socket = host_socket(5006);
        let mut gso_header = [0u8; VNET_HDR_LEN];
        gso_header[1] = 0x33; // no such GSO type
        let frame = udp_frame((GUEST_IP, 4000), (HOST_IP, 5006), b"x", 0);
        driver.write_mem(TX_BUF, &gso_header);
        driver.write_mem(TX_BUF + 0x100, &frame);
        let chains: [&[(u64, u32, bool)]; 7] = [
            &[(TX_BUF + 0x100, VNET_HDR_LEN as u32, false)], // header only
            &[(TX_BUF + 0x100, 5, false)],                   // shorter than a header
            &[(TX_BUF + 0x100, 64, true)],                   // nothing to read
            &[(0x4000_0000, 64, false)],                     // outside guest memory
            &[(TX_BUF + 0x100, VNET_HDR_LEN as u32 + 10, false)], // a runt frame
            &[
                (TX_BUF, VNET_HDR_LEN as u32, false),
                (TX_BUF + 0x100, frame.len() as u32, false),
            ], // bad header
            &[(DATA, 70_000, false)],                        // larger than any frame
        ];
        for bufs in chains {
            driver.add_chain(TXQ, bufs);
        }
        driver.notify(TXQ);
        let used = driver.used(TXQ);
        assert_eq!(used.len(), 7, "every chain goes back");
        assert!(used.iter().all(|&(_, len)| len == 0));

        // Unusable receive chains go back empty; a good one after them still gets frames.
        driver.add_chain(RXQ, &[(rx_page(0), 2048, false)]); // device-readable only
        driver.add_chain(RXQ, &[(0x4000_0000, 2048, true)]); // outside guest memory
        driver.add_chain(RXQ, &[(rx_page(2), 4, true)]); // smaller than a header
        driver.add_chain(RXQ, &[(rx_page(3), 2048, true)]);
        driver.notify(RXQ);
        let sender = host_socket(5007);
        sender.send_to(b"still alive", (GUEST_IP, 7005)).unwrap();
        wait_for("the datagram after the bad chains", || {
            driver.used(RXQ).len() >= 4
        });
        let used = driver.used(RXQ);
        assert_eq!(
            used[..3].iter().map(|&(_, len)| len).collect::<Vec<_>>(),
            [0, 0, 0]
        );
        assert_eq!(used[3].0, 3);
        assert_eq!(udp_dport(&received(&driver, 3, rx_page).frame), Some(7005));

        // And transmit still works.
        let good = udp_frame((GUEST_IP, 4000), (HOST_IP, 5006), b"good", 0);
        transmit(&mut driver, [0; VNET_HDR_LEN], &good);
        let mut buf = [0u8; 16];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"good");
        let counters = driver.transport.metrics().counters;
        assert_eq!(
            (counters["tx_frames"], counters["tx_dropped"]),
            (1, 7),
            "{counters:?}"
        );
    });
}

#[test]
fn reset_stops_the_thread_and_drop_removes_the_tap() {
    in_netns(|| {
        let mem = memory();
        let mut driver = nic(&mem, "vrst0", 0);
        // The thread names itself once it runs.
        wait_for("the receive thread", || thread_running("net-vrst0"));
        assert!(interface_exists("vrst0"));

        driver.write32(STATUS, 0);
        assert!(!thread_running("net-vrst0"), "reset joins the receive thread");
        assert!(
            interface_exists("vrst0"),
            "the tap outlives a reset, for the next driver"
        );

        // The driver comes back (a module reload): receiving works again.
        driver.init(BASE_FEATURES, 2);
        wait_for("a new receive thread", || thread_running("net-vrst0"));
        host_side("vrst0", 0, GUEST_MAC);
        post_rx(&mut driver, 0, 4, 2048);
        host_socket(5008).send_to(b"again", (GUEST_IP, 7006)).unwrap();
        wait_for("a frame after the reset", || {
            let used = driver.used(RXQ);
            (0..used.len()).any(|i| udp_dport(&received(&driver, i, rx_page).frame) == Some(7006))
        });

        drop(driver);
        assert!(!thread_running("net-vrst0"));
        // Closing the tap removes the interface; a process another test is spawning may hold a
        // copy of the descriptor until its exec, so this can take a moment.
        wait_for("the interface to go", || !interface_exists("vrst0"));
    });
}

#[test]
fn two_nics_are_independent() {
    in_netns(|| {
        let (mem_a, mem_b) = (memory(), memory());
        let mut a = nic(&mem_a, "vnica", 0);
        let other_mac = [0x02, 0, 0, 0, 1, 0x02];
        let mut net = Net::new("vnicb", Some(other_mac)).unwrap();
        net.ack_features(BASE_FEATURES);
        let mut b = Driver::new(&mem_b, Box::new(net));
        b.init(BASE_FEATURES, 2);
        host_side("vnica", 0, GUEST_MAC);
        host_side("vnicb", 1, other_mac);
        post_rx(&mut a, 0, 4, 2048);
        post_rx(&mut b, 0, 4, 2048);

        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.send_to(b"to a", (GUEST_IP, 7007)).unwrap();
        socket
            .send_to(b"to b", (Ipv4Addr::new(10, 0, 1, 2), 7008))
            .unwrap();
        let has = |driver: &Driver, port| {
            let used = driver.used(RXQ);
            (0..used.len()).any(|i| udp_dport(&received(driver, i, rx_page).frame) == Some(port))
        };
        wait_for("a's datagram", || has(&a, 7007));
        wait_for("b's datagram", || has(&b, 7008));
        assert!(!has(&a, 7008) && !has(&b, 7007));

        // Resetting one leaves the other running.
        wait_for("both threads", || {
            thread_running("net-vnica") && thread_running("net-vnicb")
        });
        a.write32(STATUS, 0);
        assert!(!thread_running("net-vnica"));
        assert!(thread_running("net-vnicb"));
    });
}

#[test]
fn a_paused_vm_receives_nothing_and_a_saved_nic_resumes_on_a_new_tap() {
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::notifier::PauseGate;
    use std::sync::Arc;
    in_netns(|| {
        let mem = memory();
        let gate = Arc::new(PauseGate::default());
        let mut net = Net::new("vsnap0", Some(GUEST_MAC)).unwrap();
        net.set_pause_gate(gate.clone());
        net.ack_features(BASE_FEATURES);
        let mut driver = Driver::new(&mem, Box::new(net));
        assert_eq!(driver.init(BASE_FEATURES, 2) & 0x4, 0x4, "DRIVER_OK set");
        host_side("vsnap0", 0, GUEST_MAC);
        post_rx(&mut driver, 0, 4, 2048);
        let socket = host_socket(5010);

        // Paused: the frame waits in the tap, the guest's memory does not change.
        gate.pause();
        socket.send_to(b"while paused", (GUEST_IP, 7010)).unwrap();
        thread::sleep(Duration::from_millis(150));
        assert!(
            driver.used(RXQ).is_empty(),
            "a paused VM's NIC wrote a frame into guest memory"
        );
        let saved = driver.transport.save().expect("a NIC's state can be saved");
        assert!(saved.active);
        assert_eq!(
            (saved.queues[RXQ].next_avail, saved.queues[RXQ].next_used),
            (0, 0)
        );
        gate.resume();
        wait_for("the frame held over the pause", || {
            let used = driver.used(RXQ);
            (0..used.len()).any(|i| udp_dport(&received(&driver, i, rx_page).frame) == Some(7010))
        });

        // Saved after the delivery, then the device (and its tap) is gone and a new one takes over.
        let delivered = driver.used(RXQ).len() as u16;
        let saved = driver.transport.save().unwrap();
        assert_eq!(saved.queues[RXQ].next_used, delivered);
        let irq = driver.irq.clone();
        driver.transport = MmioTransport::new(
            mem.clone(),
            Box::new(crate::devices::virtio::Rng::new()),
            irq.clone(),
        );
        wait_for("the old tap to vanish", || !interface_exists("vsnap0"));
        let mut net = Net::new("vsnap0", Some(GUEST_MAC)).unwrap();
        net.set_pause_gate(gate.clone());
        driver.transport = MmioTransport::new(mem.clone(), Box::new(net), irq);
        assert!(driver.transport.restore(&saved), "the saved state fits a new NIC");
        host_side("vsnap0", 0, GUEST_MAC);
        // The buffers the guest posted before the snapshot and never got back are used next.
        socket.send_to(b"after restore", (GUEST_IP, 7011)).unwrap();
        wait_for("a frame after the restore", || {
            let used = driver.used(RXQ);
            (delivered as usize..used.len())
                .any(|i| udp_dport(&received(&driver, i, rx_page).frame) == Some(7011))
        });
    });
}
