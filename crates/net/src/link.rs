//! Links and their addresses and routes, by netlink: bridges, veth pairs, macvlan and VLAN links.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoMacVlan, InfoPortData, InfoPortKind, InfoVeth, InfoVlan,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::netlink::Netlink;

/// The index of the link called `name` in the calling thread's namespace, if there is one.
pub fn index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

fn new_link(name: &str, kind: InfoKind, data: Option<InfoData>) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.into()));
    let mut info = vec![LinkInfo::Kind(kind)];
    if let Some(d) = data {
        info.push(LinkInfo::Data(d));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    msg
}

fn create(nl: &mut Netlink, msg: LinkMessage) -> io::Result<()> {
    nl.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
}

pub fn add_bridge(nl: &mut Netlink, name: &str, mtu: u32) -> io::Result<()> {
    let mut msg = new_link(name, InfoKind::Bridge, None);
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    create(nl, msg)
}

/// A veth pair: `host` here, `peer` made directly in the namespace `peer_ns` (so it never appears on the
/// host under a name that could clash).
pub fn add_veth(
    nl: &mut Netlink,
    host: &str,
    peer: &str,
    peer_ns: BorrowedFd<'_>,
    mtu: u32,
) -> io::Result<()> {
    let mut peer_msg = LinkMessage::default();
    peer_msg.attributes.push(LinkAttribute::IfName(peer.into()));
    peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
    peer_msg
        .attributes
        .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
    let mut msg = new_link(
        host,
        InfoKind::Veth,
        Some(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    );
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    create(nl, msg)
}

/// A macvlan link in bridge mode on `parent`, moved at once into `ns`.
pub fn add_macvlan(
    nl: &mut Netlink,
    name: &str,
    parent: u32,
    ns: BorrowedFd<'_>,
    mtu: Option<u32>,
) -> io::Result<()> {
    let data = InfoData::MacVlan(vec![InfoMacVlan::Mode(MacVlanMode::Bridge)]);
    let mut msg = new_link(name, InfoKind::MacVlan, Some(data));
    msg.attributes.push(LinkAttribute::Link(parent));
    msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
    if let Some(m) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(m));
    }
    create(nl, msg)
}

/// An 802.1Q sub-interface `name` of `parent` carrying VLAN `id`.
pub fn add_vlan(nl: &mut Netlink, name: &str, parent: u32, id: u16) -> io::Result<()> {
    let mut msg = new_link(name, InfoKind::Vlan, Some(InfoData::Vlan(vec![InfoVlan::Id(id)])));
    msg.attributes.push(LinkAttribute::Link(parent));
    create(nl, msg)
}

/// What [`set`] changes on a link; `None` leaves a property as it is.
#[derive(Default)]
pub struct LinkChange<'a> {
    pub up: bool,
    pub controller: Option<u32>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub name: Option<&'a str>,
}

pub fn set(nl: &mut Netlink, index: u32, change: LinkChange<'_>) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if change.up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    if let Some(c) = change.controller {
        msg.attributes.push(LinkAttribute::Controller(c));
    }
    if let Some(m) = change.mtu {
        msg.attributes.push(LinkAttribute::Mtu(m));
    }
    if let Some(mac) = change.mac {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(n) = change.name {
        msg.attributes.push(LinkAttribute::IfName(n.into()));
    }
    nl.request(RouteNetlinkMessage::SetLink(msg), 0)
}

/// Hairpin mode on a bridge port: a frame may leave by the port it came in. With br_netfilter loaded, an
/// instance reaching its own port forward is DNAT'ed at the bridge and must go back out of its own port.
pub fn set_hairpin(nl: &mut Netlink, index: u32) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
    ]));
    nl.request(RouteNetlinkMessage::NewLink(msg), 0)
}

pub fn delete(nl: &mut Netlink, index: u32) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    nl.request(RouteNetlinkMessage::DelLink(msg), 0)
}

/// Adds `addr/prefix` to a link; an address already there is not an error. IPv6 addresses skip duplicate
/// address detection: vesseld's IPAM already guarantees uniqueness, and a tentative address cannot be
/// bound or used for seconds.
pub fn add_address(nl: &mut Netlink, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = prefix;
    msg.header.family = family(addr);
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    if addr.is_ipv6() {
        msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match nl.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_REPLACE) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A default route through `gateway` on link `oif`.
pub fn add_default_route(nl: &mut Netlink, gateway: IpAddr, oif: u32) -> io::Result<()> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(gateway);
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Gateway(match gateway {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }));
    msg.attributes.push(RouteAttribute::Oif(oif));
    match nl.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// The names of every link in the calling thread's namespace.
pub fn names(nl: &mut Netlink) -> io::Result<Vec<String>> {
    let msgs = nl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            }),
            _ => None,
        })
        .collect())
}

/// The IPv4 routes of the process's namespace (from /proc/net/route), to keep new subnets clear of them.
pub fn ipv4_routes() -> Vec<ipnet::Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The numbers are the network-order bytes read as a native integer; a default route is no subnet.
            let prefix = mask.count_ones() as u8;
            (prefix > 0)
                .then(|| ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(dest.to_ne_bytes()), prefix).ok())?
        })
        .collect()
}
