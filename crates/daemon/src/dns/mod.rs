//! The embedded DNS resolver vesseld runs for each network: it answers the names of the network's
//! instances from a [`Zone`] (A, AAAA, and PTR for their addresses) and forwards every other query to
//! the host's resolvers, relaying their answer unchanged.
//!
//! Every packet is guest-controlled: nothing is logged per packet, malformed queries are dropped,
//! allocations are bounded by the 64 KiB DNS message size, and forwards and TCP connections in flight
//! are capped per socket.

mod answer;
mod server;
#[cfg(test)]
mod tests;
mod upstream;
mod zone;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, RwLock};

pub use server::DnsServer;
pub use zone::Zone;

/// A shared, replaceable zone: vesseld swaps in a new Zone whenever attachments change.
pub type SharedZone = Arc<RwLock<Zone>>;

/// How many nameservers of a resolv.conf are used, as in glibc (MAXNS).
const MAX_NAMESERVERS: usize = 3;

/// The host's resolvers from a resolv.conf text (nameserver lines, port 53), for the default upstreams.
///
/// Like glibc: the first three distinct `nameserver` lines count, anything after the address is
/// ignored, and an IPv6 address may carry a numeric scope (`fe80::1%2`). Lines it cannot read (an
/// interface-name scope among them) are skipped. An empty list means the text named no resolver.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(upstream) = words.next().and_then(parse_nameserver) else {
            continue;
        };
        if !upstreams.contains(&upstream) {
            upstreams.push(upstream);
        }
        if upstreams.len() == MAX_NAMESERVERS {
            break;
        }
    }
    upstreams
}

/// `1.2.3.4`, `2001:db8::1` or `fe80::1%2`, on port 53.
fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    let (ip, scope) = word.split_once('%')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let scope: u32 = scope.parse().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope)))
}

#[cfg(test)]
mod resolv_conf_tests {
    use super::*;

    #[test]
    fn nameserver_lines() {
        let text = "# generated\n\
                    search example.test\n\
                    nameserver 127.0.0.53 # stub\n\
                    ;nameserver 127.0.0.9\n\
                    nameserver\n\
                    nameserver not-an-address\n\
                    nameserver fe80::1%eth0\n\
                    \tnameserver   ::1\n\
                    nameserver 127.0.0.53\n\
                    options edns0 trust-ad\n\
                    nameserver fe80::1%2\n\
                    nameserver 127.0.0.2\n";
        let want: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2)),
        ];
        assert_eq!(upstreams_from_resolv_conf(text), want);
        assert!(upstreams_from_resolv_conf("").is_empty());
        assert!(upstreams_from_resolv_conf("search x\noptions ndots:2\n").is_empty());
    }
}
