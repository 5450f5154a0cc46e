//! The sockets and tasks of one network's resolver.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use super::answer::{decide, servfail, Action};
use super::upstream::{forward_tcp, forward_udp};
use super::SharedZone;

/// Forwarded UDP queries in flight per socket; past that, new ones are dropped (the client retries).
const MAX_FORWARDS: usize = 256;
/// Open TCP connections per listener; past that, new ones are closed at once.
const MAX_TCP_CONNECTIONS: usize = 64;
/// How long a TCP connection may sit idle (or take to send a query, or to take its answer).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Tries at finding a TCP port free on the address where the UDP socket got one, when the port is 0.
const PORT_TRIES: usize = 16;

/// One network's resolver: a UDP socket and a TCP listener on each listen address, each served by a
/// task. Dropping it aborts the tasks (and with them the connections and forwards they own), which
/// closes the sockets.
#[derive(Debug)]
pub struct DnsServer {
    tasks: Vec<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
}

/// What every task of one server reads.
struct Shared {
    zone: SharedZone,
    upstreams: Vec<SocketAddr>,
}

impl DnsServer {
    /// Serves `zone` on port `port` of each address in `listen` (UDP and TCP), forwarding names the zone does
    /// not hold to `upstreams` (tried in order, 2 s each) and relaying their answer unchanged.
    /// Binds with IP_FREEBIND so an address still being configured does not fail the bind.
    ///
    /// Queries that came over UDP are forwarded over UDP, those that came over TCP over TCP. With
    /// `port` 0 each address gets one ephemeral port, shared by its UDP socket and TCP listener.
    /// Fails, binding nothing, if any socket cannot be bound.
    pub async fn start(
        listen: &[IpAddr],
        port: u16,
        zone: SharedZone,
        upstreams: Vec<SocketAddr>,
    ) -> io::Result<DnsServer> {
        let mut bound = Vec::with_capacity(listen.len());
        for &ip in listen {
            bound.push(bind_pair(SocketAddr::new(ip, port))?);
        }
        let shared = Arc::new(Shared { zone, upstreams });
        let mut tasks = Vec::with_capacity(bound.len() * 2);
        let mut addrs = Vec::with_capacity(bound.len());
        for (udp, tcp) in bound {
            let udp = UdpSocket::from_std(udp)?;
            let tcp = TcpListener::from_std(tcp)?;
            addrs.push(udp.local_addr()?);
            tasks.push(tokio::spawn(serve_udp(Arc::new(udp), shared.clone())));
            tasks.push(tokio::spawn(serve_tcp(tcp, shared.clone())));
        }
        Ok(DnsServer { tasks, addrs })
    }

    /// The local addresses actually bound (useful when port is 0 in tests): one per listen address, in
    /// their order, each serving both UDP and TCP.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A UDP socket and a TCP listener on `addr`; with port 0, on one port that both could have.
fn bind_pair(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut tries = 0;
    loop {
        let udp = bind_udp(addr)?;
        let port = udp.local_addr()?.port();
        match bind_tcp(SocketAddr::new(addr.ip(), port)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && tries < PORT_TRIES => {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A non-blocking socket of `ty` for `addr`, with IP_FREEBIND (IPV6_FREEBIND) set, not yet bound.
fn socket_for(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
        SocketAddr::V6(_) => {
            socket.set_freebind_v6(true)?;
            socket.set_only_v6(true)?;
        }
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket_for(addr, Type::DGRAM, Protocol::UDP)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket_for(addr, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// Decides what to do with `packet` under the current zone (the lock is not held past this).
fn decide_now(shared: &Shared, packet: &[u8], udp: bool) -> Action {
    let zone = shared
        .zone
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    decide(packet, &zone, udp)
}

/// Answers the datagrams on `socket`; forwarded queries each get a task of their own.
async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; u16::MAX as usize];
    // Dropped with this task when the server is, which aborts the forwards still in flight.
    let mut forwards = JoinSet::new();
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, peer)) = received else {
                    // Nothing to do about it but not spin on it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let packet = buf.get(..n).unwrap_or_default();
                match decide_now(&shared, packet, true) {
                    Action::Drop => {}
                    Action::Reply(answer) => {
                        let _ = socket.send_to(&answer, peer).await;
                    }
                    Action::Forward(request) if forwards.len() < MAX_FORWARDS => {
                        let (socket, shared, packet) = (socket.clone(), shared.clone(), packet.to_vec());
                        forwards.spawn(async move {
                            let answer = forward_udp(&request, &packet, &shared.upstreams).await;
                            let answer = answer.unwrap_or_else(|| servfail(&request));
                            let _ = socket.send_to(&answer, peer).await;
                        });
                    }
                    Action::Forward(_) => {}
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
}

/// Accepts connections on `listener`, each served by a task of its own.
async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    // Dropped with this task when the server is, which aborts the connections.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) if connections.len() < MAX_TCP_CONNECTIONS => {
                        connections.spawn(serve_connection(stream, shared.clone()));
                    }
                    Ok(_) => {}
                    // Out of descriptors, say: wait for some to be freed rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Answers the length-prefixed queries of one connection in turn, until the client closes it, sends
/// something malformed, or is idle for [`TCP_IDLE`].
async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    loop {
        let mut prefix = [0u8; 2];
        if !matches!(timeout(TCP_IDLE, stream.read_exact(&mut prefix)).await, Ok(Ok(_))) {
            return;
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        if !matches!(timeout(TCP_IDLE, stream.read_exact(&mut packet)).await, Ok(Ok(_))) {
            return;
        }
        let answer = match decide_now(&shared, &packet, false) {
            Action::Drop => return,
            Action::Reply(answer) => answer,
            Action::Forward(request) => forward_tcp(&request, &packet, &shared.upstreams)
                .await
                .unwrap_or_else(|| servfail(&request)),
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&answer);
        if !matches!(timeout(TCP_IDLE, stream.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}
