//! Forwarding a query to the upstream resolvers and taking their answer.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::answer::{answers, Request};

/// How long each upstream has to answer (connecting included, for TCP).
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `packet` unchanged (the client's ID included) to each of `upstreams` in turn over UDP, and
/// returns the first answer to it, unchanged. `None` if none answered in time.
pub(crate) async fn forward_udp(
    request: &Request,
    packet: &[u8],
    upstreams: &[SocketAddr],
) -> Option<Vec<u8>> {
    for &upstream in upstreams {
        if let Ok(Ok(answer)) = timeout(UPSTREAM_TIMEOUT, udp_once(request, packet, upstream)).await {
            return Some(answer);
        }
    }
    None
}

/// Like [`forward_udp`] over TCP (one connection per query), for queries that came over TCP, whose
/// answers may be too large for UDP.
pub(crate) async fn forward_tcp(
    request: &Request,
    packet: &[u8],
    upstreams: &[SocketAddr],
) -> Option<Vec<u8>> {
    for &upstream in upstreams {
        if let Ok(Ok(answer)) = timeout(UPSTREAM_TIMEOUT, tcp_once(request, packet, upstream)).await {
            return Some(answer);
        }
    }
    None
}

/// One query over a fresh UDP socket connected to `upstream`, so that only its datagrams arrive there
/// (and a closed port fails at once with ECONNREFUSED). Datagrams that do not answer the query are
/// skipped.
async fn udp_once(request: &Request, packet: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; u16::MAX as usize];
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Some(answer) = buf.get(..n) {
            if answers(request, packet, answer) {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }
}

/// One query over a fresh TCP connection to `upstream`: the length-prefixed packet out, one
/// length-prefixed answer back.
async fn tcp_once(request: &Request, packet: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let len = u16::try_from(packet.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut answer).await?;
    if answers(request, packet, &answer) {
        Ok(answer)
    } else {
        Err(io::ErrorKind::InvalidData.into())
    }
}
