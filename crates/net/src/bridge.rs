//! A network's bridge on the host: made when first needed, given the gateway addresses, and the sysctls
//! that routing through it needs.

use std::net::IpAddr;

use crate::link::{self, LinkChange};
use crate::netlink::Netlink;
use crate::{sysctl, NetError};

#[derive(Debug, Clone, PartialEq)]
pub struct Bridge {
    pub name: String,
    pub mtu: u32,
    /// Gateway addresses with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
}

fn failed(name: &str, what: &str, e: std::io::Error) -> NetError {
    NetError::Link {
        name: name.into(),
        action: what.into(),
        source: e,
    }
}

/// Makes the bridge (or takes the one there), gives it its addresses and brings it up; idempotent.
pub fn ensure(b: &Bridge) -> Result<u32, NetError> {
    let mut nl = Netlink::open().map_err(|e| failed(&b.name, "open netlink for", e))?;
    let index = match link::index(&b.name) {
        Some(i) => i,
        None => {
            match link::add_bridge(&mut nl, &b.name, b.mtu) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(failed(&b.name, "create", e)),
                _ => {}
            }
            link::index(&b.name).ok_or_else(|| NetError::Missing(b.name.clone()))?
        }
    };
    let has_v6 = b.addresses.iter().any(|(a, _)| a.is_ipv6());
    if has_v6 {
        sysctl::write(&format!("net/ipv6/conf/{}/disable_ipv6", b.name), "0")?;
        sysctl::write("net/ipv6/conf/all/forwarding", "1")?;
    }
    for (addr, prefix) in &b.addresses {
        link::add_address(&mut nl, index, *addr, *prefix).map_err(|e| failed(&b.name, "address", e))?;
    }
    link::set(
        &mut nl,
        index,
        LinkChange {
            up: true,
            mtu: Some(b.mtu),
            ..Default::default()
        },
    )
    .map_err(|e| failed(&b.name, "bring up", e))?;
    sysctl::write("net/ipv4/ip_forward", "1")?;
    // Localhost forwards: DNAT of 127.0.0.1 to an instance is routed out of the bridge, which the kernel
    // allows only with route_localnet (the source is masqueraded on the way out).
    sysctl::write(&format!("net/ipv4/conf/{}/route_localnet", b.name), "1")?;
    Ok(index)
}

/// Deletes the bridge (its ports go with their instances); gone already is fine.
pub fn remove(name: &str) -> Result<(), NetError> {
    let Some(index) = link::index(name) else {
        return Ok(());
    };
    let mut nl = Netlink::open().map_err(|e| failed(name, "open netlink for", e))?;
    match link::delete(&mut nl, index) {
        Err(e) if e.raw_os_error() != Some(libc::ENODEV) => Err(failed(name, "delete", e)),
        _ => Ok(()),
    }
}
