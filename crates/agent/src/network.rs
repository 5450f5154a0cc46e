//! The guest's interfaces as the host's IPAM gave them: each NIC found by its MAC, then up with its MTU,
//! addresses and default routes (netlink, through vessel-net), and the loopback up.

use std::net::IpAddr;

use vessel_net::veth::{self, Endpoint};

use crate::proto::Interface;

/// The interface whose MAC is `mac` (from sysfs).
fn by_mac(mac: &str) -> Option<String> {
    std::fs::read_dir("/sys/class/net").ok()?.flatten().find_map(|e| {
        let addr = std::fs::read_to_string(e.path().join("address")).ok()?;
        addr.trim()
            .eq_ignore_ascii_case(mac)
            .then(|| e.file_name().to_string_lossy().into_owned())
    })
}

pub fn configure(interfaces: &[Interface]) -> Result<(), String> {
    if let (Some(lo), Ok(mut nl)) = (
        vessel_net::link::index("lo"),
        vessel_net::netlink::Netlink::open(),
    ) {
        let up = vessel_net::link::LinkChange {
            up: true,
            ..Default::default()
        };
        vessel_net::link::set(&mut nl, lo, up).map_err(|e| format!("loopback: {e}"))?;
    }
    for i in interfaces {
        let ifname = by_mac(&i.mac).ok_or_else(|| format!("no interface has MAC {}", i.mac))?;
        let mac = vessel_net::ipam::parse_mac(&i.mac).ok_or_else(|| format!("bad MAC {}", i.mac))?;
        let mut addresses = Vec::new();
        for a in &i.addresses {
            let net: vessel_net::ipnet::IpNet = a.parse().map_err(|_| format!("bad address {a}"))?;
            addresses.push((net.addr(), net.prefix_len()));
        }
        let gateways = i
            .gateways
            .iter()
            .map(|g| g.parse::<IpAddr>().map_err(|_| format!("bad gateway {g}")))
            .collect::<Result<_, _>>()?;
        let ep = Endpoint {
            ifname: ifname.clone(),
            host_ifname: ifname,
            mac,
            mtu: if i.mtu == 0 { 1500 } else { i.mtu },
            addresses,
            gateways,
            rate: None,
        };
        veth::configure_inside(&ep).map_err(|e| e.to_string())?;
    }
    Ok(())
}
