//! The resolver over real sockets, on loopback only. The zones' addresses are data, never contacted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::{DnsServer, SharedZone, Zone};

const WEB4: &str = "127.88.0.2";
const WEB6: &str = "fd00:88::2";
const DB4: &str = "127.88.0.3";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn shared(entries: &[(&str, &str)]) -> SharedZone {
    let mut zone = Zone::new();
    for (name, addr) in entries {
        zone.insert(name, ip(addr));
    }
    Arc::new(RwLock::new(zone))
}

async fn server(zone: SharedZone, upstreams: Vec<SocketAddr>) -> (DnsServer, SocketAddr) {
    let server = DnsServer::start(&[LOOPBACK], 0, zone, upstreams).await.unwrap();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].ip(), LOOPBACK);
    (server, addrs[0])
}

fn query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

/// The reply to `packet` over UDP, or `None` if none came within `wait`.
async fn udp_raw(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(packet).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = timeout(wait, socket.recv(&mut buf)).await.ok()?.unwrap();
    buf.truncate(n);
    Some(buf)
}

async fn ask(server: SocketAddr, tcp: bool, packet: &[u8]) -> Message {
    let bytes = if tcp {
        let mut s = TcpStream::connect(server).await.unwrap();
        s.write_all(&(packet.len() as u16).to_be_bytes()).await.unwrap();
        s.write_all(packet).await.unwrap();
        let mut prefix = [0u8; 2];
        timeout(Duration::from_secs(5), s.read_exact(&mut prefix))
            .await
            .unwrap()
            .unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        s.read_exact(&mut buf).await.unwrap();
        buf
    } else {
        udp_raw(server, packet, Duration::from_secs(5))
            .await
            .expect("no UDP reply")
    };
    Message::from_vec(&bytes).unwrap()
}

fn addrs_of(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .map(|r| match r.data() {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

fn ptr_of(m: &Message) -> String {
    match m.answers() {
        [r] => match r.data() {
            RData::PTR(p) => p.0.to_ascii(),
            other => panic!("unexpected record {other:?}"),
        },
        other => panic!("want one answer, got {other:?}"),
    }
}

fn assert_local(m: &Message, id: u16, code: ResponseCode) {
    assert_eq!(m.id(), id);
    assert_eq!(m.message_type(), MessageType::Response);
    assert_eq!(m.response_code(), code);
    assert!(m.authoritative());
    assert!(m.recursion_available());
    assert!(m.recursion_desired());
    assert_eq!(m.queries().len(), 1);
}

#[tokio::test]
async fn answers_the_zone_over_udp_and_tcp() {
    let zone = shared(&[("web", WEB4), ("Web.", WEB6), ("db", DB4)]);
    let (_server, addr) = server(zone, Vec::new()).await;
    let v6_reverse = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.8.0.0.0.0.d.f.ip6.arpa.";
    for tcp in [false, true] {
        let m = ask(addr, tcp, &query(0x1234, "WEB.", RecordType::A)).await;
        assert_local(&m, 0x1234, ResponseCode::NoError);
        assert_eq!(addrs_of(&m), vec![ip(WEB4)]);
        assert_eq!(m.answers()[0].ttl(), 30);
        assert_eq!(m.answers()[0].name().to_ascii(), "WEB.");

        let m = ask(addr, tcp, &query(2, "web.", RecordType::AAAA)).await;
        assert_local(&m, 2, ResponseCode::NoError);
        assert_eq!(addrs_of(&m), vec![ip(WEB6)]);

        // NODATA: the name is ours, without that type; never forwarded (there is no upstream).
        let m = ask(addr, tcp, &query(3, "db.", RecordType::AAAA)).await;
        assert_local(&m, 3, ResponseCode::NoError);
        assert!(m.answers().is_empty());
        let m = ask(addr, tcp, &query(4, "db.", RecordType::MX)).await;
        assert_local(&m, 4, ResponseCode::NoError);
        assert!(m.answers().is_empty());

        let m = ask(addr, tcp, &query(5, "3.0.88.127.in-addr.arpa.", RecordType::PTR)).await;
        assert_local(&m, 5, ResponseCode::NoError);
        assert_eq!(ptr_of(&m), "db.");
        let m = ask(addr, tcp, &query(6, v6_reverse, RecordType::PTR)).await;
        assert_local(&m, 6, ResponseCode::NoError);
        assert_eq!(ptr_of(&m), "web.");
    }
}

#[tokio::test]
async fn a_swapped_zone_is_used_for_the_next_query() {
    let zone = shared(&[("web", WEB4)]);
    let (_server, addr) = server(zone.clone(), Vec::new()).await;
    let mut next = Zone::new();
    next.insert("web", ip(DB4));
    *zone.write().unwrap() = next;
    let m = ask(addr, false, &query(1, "web.", RecordType::A)).await;
    assert_eq!(addrs_of(&m), vec![ip(DB4)]);
}

#[tokio::test]
async fn forwards_other_names_keeping_the_id() {
    let (_upstream, upstream_addr) = server(shared(&[("example.test", "127.0.0.9")]), Vec::new()).await;
    // A closed port first: ECONNREFUSED moves on to the next upstream at once.
    let closed = closed_port().await;
    let (_server, addr) = server(shared(&[("web", WEB4)]), vec![closed, upstream_addr]).await;
    for tcp in [false, true] {
        let m = ask(addr, tcp, &query(0xbeef, "Example.Test.", RecordType::A)).await;
        assert_eq!(m.id(), 0xbeef);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(addrs_of(&m), vec![ip("127.0.0.9")]);
        // Relayed unchanged: the upstream's own flags and the question as the client sent it.
        assert!(m.authoritative());
        assert_eq!(m.queries()[0].name().to_ascii(), "Example.Test.");
    }
}

#[tokio::test]
async fn servfail_when_no_upstream_answers() {
    let closed = closed_port().await;
    let (_server, addr) = server(shared(&[("web", WEB4)]), vec![closed]).await;
    for tcp in [false, true] {
        let m = ask(addr, tcp, &query(0x4242, "elsewhere.test.", RecordType::A)).await;
        assert_eq!(m.id(), 0x4242);
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        assert!(m.answers().is_empty());
        assert_eq!(m.queries()[0].name().to_ascii(), "elsewhere.test.");
    }
    // No upstream at all.
    let (_server, addr) = server(shared(&[]), Vec::new()).await;
    let m = ask(addr, false, &query(9, "elsewhere.test.", RecordType::A)).await;
    assert_eq!(m.response_code(), ResponseCode::ServFail);
}

#[tokio::test]
async fn garbage_gets_no_reply_and_the_server_goes_on() {
    let (_server, addr) = server(shared(&[("web", WEB4)]), Vec::new()).await;
    let good = query(1, "web.", RecordType::A);
    let mut bad_name = good.clone();
    bad_name.truncate(15);
    let mut response = good.clone();
    response[2] |= 0x80;
    let mut bad_label = good.clone();
    bad_label[12] = 0xc0; // a compression pointer...
    bad_label[13] = 12; // ...to itself
    let garbage: [&[u8]; 5] = [b"", b"\x01\x02garbage", &bad_name, &response, &bad_label];
    for packet in garbage {
        let reply = udp_raw(addr, packet, Duration::from_millis(200)).await;
        assert!(reply.is_none(), "{packet:?} got {reply:?}");
    }
    // Over TCP the connection is closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    let mut rest = Vec::new();
    let n = timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);

    for tcp in [false, true] {
        let m = ask(addr, tcp, &good).await;
        assert_eq!(addrs_of(&m), vec![ip(WEB4)]);
    }
}

#[tokio::test]
async fn other_opcodes_and_question_counts_get_an_error() {
    let (_server, addr) = server(shared(&[("web", WEB4)]), Vec::new()).await;
    let mut m = Message::new();
    m.set_id(3).set_op_code(OpCode::Update);
    m.add_query(Query::query(Name::from_ascii("web.").unwrap(), RecordType::A));
    let reply = ask(addr, false, &m.to_vec().unwrap()).await;
    assert_eq!((reply.id(), reply.response_code()), (3, ResponseCode::NotImp));

    let mut m = Message::new();
    m.set_id(4);
    let reply = ask(addr, false, &m.to_vec().unwrap()).await;
    assert_eq!((reply.id(), reply.response_code()), (4, ResponseCode::FormErr));
}

#[tokio::test]
async fn dropping_the_server_closes_its_sockets() {
    let (server, addr) = server(shared(&[("web", WEB4)]), Vec::new()).await;
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err());
    // The port is free again.
    let again = DnsServer::start(&[LOOPBACK], addr.port(), shared(&[]), Vec::new())
        .await
        .unwrap();
    assert_eq!(again.local_addrs(), vec![addr]);
}

/// A loopback port nothing listens on (UDP nor TCP, as far as a test can tell).
async fn closed_port() -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    socket.local_addr().unwrap()
}
