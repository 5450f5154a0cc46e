//! An instance's attachment to a bridge network: a veth pair, one end a port of the bridge, the other
//! inside the instance's namespace with its address, routes and MTU.

use std::net::IpAddr;
use std::os::fd::AsFd;

use crate::link::{self, LinkChange};
use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::NetError;

/// One interface of an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Its name inside the instance (eth0, eth1, ...).
    pub ifname: String,
    /// The host end's name (veth) or the link's name while it is made (macvlan).
    pub host_ifname: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Addresses with prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Gateways for default routes (none on an instance's second network unless it is its first of that
    /// family).
    pub gateways: Vec<IpAddr>,
    /// A bandwidth limit each way, in bits per second.
    pub rate: Option<u64>,
}

fn failed(name: &str, what: &str, e: std::io::Error) -> NetError {
    NetError::Link {
        name: name.into(),
        action: what.into(),
        source: e,
    }
}

/// Plumbs `ep` from the bridge `bridge` into `ns`. A host end left from an earlier attempt is replaced; on
/// failure nothing stays behind.
pub fn attach(ns: &NetNs, bridge: &str, ep: &Endpoint) -> Result<(), NetError> {
    let mut nl = Netlink::open().map_err(|e| failed(&ep.host_ifname, "open netlink for", e))?;
    let bridge_index = link::index(bridge).ok_or_else(|| NetError::Missing(bridge.into()))?;
    if let Some(stale) = link::index(&ep.host_ifname) {
        let _ = link::delete(&mut nl, stale);
    }
    link::add_veth(&mut nl, &ep.host_ifname, &ep.ifname, ns.as_fd(), ep.mtu)
        .map_err(|e| failed(&ep.host_ifname, "create veth", e))?;
    let plumbed = (|| {
        let host = link::index(&ep.host_ifname).ok_or_else(|| NetError::Missing(ep.host_ifname.clone()))?;
        link::set(
            &mut nl,
            host,
            LinkChange {
                up: true,
                controller: Some(bridge_index),
                ..Default::default()
            },
        )
        .map_err(|e| failed(&ep.host_ifname, "attach to bridge", e))?;
        link::set_hairpin(&mut nl, host).map_err(|e| failed(&ep.host_ifname, "set hairpin mode on", e))?;
        if let Some(r) = ep.rate {
            crate::rate::limit(&mut nl, host, r).map_err(|e| failed(&ep.host_ifname, "rate-limit", e))?;
        }
        ns.enter(|| configure_inside(ep))
    })();
    if plumbed.is_err() {
        if let Some(i) = link::index(&ep.host_ifname) {
            let _ = link::delete(&mut nl, i);
        }
    }
    plumbed
}

/// Inside the namespace: MAC, MTU, up, addresses, default routes.
pub fn configure_inside(ep: &Endpoint) -> Result<(), NetError> {
    let mut nl = Netlink::open().map_err(|e| failed(&ep.ifname, "open netlink for", e))?;
    let i = link::index(&ep.ifname).ok_or_else(|| NetError::Missing(ep.ifname.clone()))?;
    link::set(
        &mut nl,
        i,
        LinkChange {
            up: true,
            mac: Some(ep.mac),
            mtu: Some(ep.mtu),
            ..Default::default()
        },
    )
    .map_err(|e| failed(&ep.ifname, "configure", e))?;
    for (addr, prefix) in &ep.addresses {
        link::add_address(&mut nl, i, *addr, *prefix).map_err(|e| failed(&ep.ifname, "address", e))?;
    }
    for gw in &ep.gateways {
        link::add_default_route(&mut nl, *gw, i).map_err(|e| failed(&ep.ifname, "route", e))?;
    }
    if let Some(r) = ep.rate {
        crate::rate::limit(&mut nl, i, r).map_err(|e| failed(&ep.ifname, "rate-limit", e))?;
    }
    Ok(())
}

/// Removes the interface `ifname` from `ns` (its veth peer on the bridge goes with it).
pub fn detach(ns: &NetNs, ifname: &str) -> Result<(), NetError> {
    ns.enter(|| {
        let Some(i) = link::index(ifname) else {
            return Ok(());
        };
        let mut nl = Netlink::open().map_err(|e| failed(ifname, "open netlink for", e))?;
        match link::delete(&mut nl, i) {
            Err(e) if e.raw_os_error() != Some(libc::ENODEV) => Err(failed(ifname, "delete", e)),
            _ => Ok(()),
        }
    })
}
