//! Address management: subnets, gateways and the choice of free addresses. Pure functions over what the
//! daemon's store says is used, so that choosing and recording an address can be one transaction there.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("Invalid subnet {0:?}: write it as ADDRESS/PREFIX, e.g. 10.20.0.0/24")]
    BadSubnet(String),
    #[error("Subnet {given} is not a network address: use {network}")]
    NotNetwork { given: String, network: String },
    #[error("Subnet {0} is too small: it needs room for a gateway and instances (a /30 at least, a /126 for IPv6)")]
    TooSmall(String),
    #[error("Subnet {0} overlaps {1}")]
    Overlap(String, String),
    #[error("Address {addr} is not in subnet {subnet}")]
    Outside { addr: String, subnet: String },
    #[error("Address {addr} is the network, broadcast or gateway address of {subnet}")]
    Reserved { addr: String, subnet: String },
    #[error("Address {0} is already in use on this network")]
    InUse(String),
    #[error("Subnet {0} has no free address left")]
    Exhausted(String),
    #[error("No free subnet is left in 10.77.0.0/16: give one with --subnet")]
    NoFreeSubnet,
}

/// Parses a subnet given by a user: it must be the network address itself.
pub fn parse_subnet(s: &str) -> Result<IpNet, IpamError> {
    let net: IpNet = s.parse().map_err(|_| IpamError::BadSubnet(s.into()))?;
    if net.trunc() != net {
        return Err(IpamError::NotNetwork {
            given: s.into(),
            network: net.trunc().to_string(),
        });
    }
    let small = match net {
        IpNet::V4(n) => n.prefix_len() > 30,
        IpNet::V6(n) => n.prefix_len() > 126,
    };
    if small {
        return Err(IpamError::TooSmall(s.into()));
    }
    Ok(net)
}

pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first host address: the gateway unless one is given.
pub fn default_gateway(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1)),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1)),
    }
}

/// An address that no instance may have: the network's own, its broadcast (IPv4), its gateway.
fn reserved(net: &IpNet, gateway: IpAddr, addr: IpAddr) -> bool {
    addr == net.network() || addr == gateway || (matches!(net, IpNet::V4(_)) && addr == net.broadcast())
}

/// Checks a gateway given by a user.
pub fn check_gateway(net: &IpNet, gateway: IpAddr) -> Result<(), IpamError> {
    if !net.contains(&gateway) {
        return Err(IpamError::Outside {
            addr: gateway.to_string(),
            subnet: net.to_string(),
        });
    }
    if gateway == net.network() || (matches!(net, IpNet::V4(_)) && gateway == net.broadcast()) {
        return Err(IpamError::Reserved {
            addr: gateway.to_string(),
            subnet: net.to_string(),
        });
    }
    Ok(())
}

/// Checks a static address (`--ip`) against the subnet and the addresses in use.
pub fn check_static(
    net: &IpNet,
    gateway: IpAddr,
    addr: IpAddr,
    used: &HashSet<IpAddr>,
) -> Result<(), IpamError> {
    if !net.contains(&addr) {
        return Err(IpamError::Outside {
            addr: addr.to_string(),
            subnet: net.to_string(),
        });
    }
    if reserved(net, gateway, addr) {
        return Err(IpamError::Reserved {
            addr: addr.to_string(),
            subnet: net.to_string(),
        });
    }
    if used.contains(&addr) {
        return Err(IpamError::InUse(addr.to_string()));
    }
    Ok(())
}

/// The lowest free address of the subnet.
pub fn allocate(net: &IpNet, gateway: IpAddr, used: &HashSet<IpAddr>) -> Result<IpAddr, IpamError> {
    net.hosts()
        .find(|a| !reserved(net, gateway, *a) && !used.contains(a))
        .ok_or_else(|| IpamError::Exhausted(net.to_string()))
}

/// A /24 from 10.77.0.0/16 that overlaps none of `taken` (other networks' subnets and the host's routes).
pub fn pick_subnet(taken: &[IpNet]) -> Result<Ipv4Net, IpamError> {
    (0u8..=255)
        .map(|i| Ipv4Net::new(Ipv4Addr::new(10, 77, i, 0), 24).unwrap_or_default())
        .find(|n| !taken.iter().any(|t| overlaps(t, &IpNet::V4(*n))))
        .ok_or(IpamError::NoFreeSubnet)
}

/// An IPv6 unique local /64 (RFC 4193): fd00::/8 with a random 40-bit global id.
pub fn ula_subnet(random: [u8; 5]) -> Ipv6Net {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..6].copy_from_slice(&random);
    Ipv6Net::new(Ipv6Addr::from(b), 64).unwrap_or_default()
}

/// A locally administered unicast MAC address from random bytes.
pub fn mac_from(random: [u8; 6]) -> [u8; 6] {
    let mut m = random;
    m[0] = (m[0] & 0xfe) | 0x02;
    m
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| (p.len() == 2).then(|| u8::from_str_radix(p, 16).ok()).flatten())
        .collect::<Option<_>>()?;
    let m: [u8; 6] = parts.try_into().ok()?;
    // Multicast or all-zero addresses cannot be an interface's.
    (m[0] & 1 == 0 && m != [0; 6]).then_some(m)
}

/// Random bytes from the kernel.
pub fn random<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut b = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    if b == [0u8; N] {
        // No /dev/urandom (a minimal chroot): the clock still makes collisions unlikely.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_must_be_network_addresses_with_room() {
        assert_eq!(parse_subnet("10.1.0.0/24").unwrap(), net("10.1.0.0/24"));
        assert!(
            matches!(parse_subnet("10.1.0.5/24"), Err(IpamError::NotNetwork { network, .. }) if network == "10.1.0.0/24")
        );
        assert!(matches!(parse_subnet("10.1.0.0/31"), Err(IpamError::TooSmall(_))));
        assert!(matches!(parse_subnet("banana"), Err(IpamError::BadSubnet(_))));
        assert!(parse_subnet("fd00:1::/64").is_ok());
    }

    #[test]
    fn allocation_skips_reserved_and_used_addresses_and_ends() {
        let n = net("10.1.0.0/30");
        let gw = default_gateway(&n);
        assert_eq!(gw, "10.1.0.1".parse::<IpAddr>().unwrap());
        let mut used = HashSet::new();
        let a = allocate(&n, gw, &used).unwrap();
        assert_eq!(a, "10.1.0.2".parse::<IpAddr>().unwrap());
        used.insert(a);
        assert_eq!(
            allocate(&n, gw, &used),
            Err(IpamError::Exhausted("10.1.0.0/30".into()))
        );
        let v6 = net("fd00:1::/64");
        assert_eq!(
            allocate(&v6, default_gateway(&v6), &HashSet::new()).unwrap(),
            "fd00:1::2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn static_addresses_are_checked() {
        let n = net("10.1.0.0/24");
        let gw = default_gateway(&n);
        let used: HashSet<IpAddr> = ["10.1.0.7".parse().unwrap()].into();
        assert!(check_static(&n, gw, "10.1.0.8".parse().unwrap(), &used).is_ok());
        assert!(matches!(
            check_static(&n, gw, "10.1.0.7".parse().unwrap(), &used),
            Err(IpamError::InUse(_))
        ));
        assert!(matches!(
            check_static(&n, gw, "10.2.0.7".parse().unwrap(), &used),
            Err(IpamError::Outside { .. })
        ));
        for r in ["10.1.0.0", "10.1.0.1", "10.1.0.255"] {
            assert!(
                matches!(
                    check_static(&n, gw, r.parse().unwrap(), &used),
                    Err(IpamError::Reserved { .. })
                ),
                "{r}"
            );
        }
    }

    #[test]
    fn picked_subnets_avoid_taken_ones() {
        let taken = vec![
            net("10.77.0.0/24"),
            net("10.77.1.0/25"),
            net("10.0.0.0/8").trunc(),
        ];
        assert_eq!(pick_subnet(&taken[..2]).unwrap().to_string(), "10.77.2.0/24");
        assert_eq!(pick_subnet(&taken), Err(IpamError::NoFreeSubnet));
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.77.3.0/24")));
        assert!(!overlaps(&net("10.77.2.0/24"), &net("10.77.3.0/24")));
    }

    #[test]
    fn macs_are_unicast_and_local() {
        let m = mac_from([0xff; 6]);
        assert_eq!(m[0], 0xfe);
        assert_eq!(parse_mac(&format_mac(&m)), Some(m));
        assert_eq!(parse_mac("01:00:00:00:00:01"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:01"), None);
        assert_eq!(ula_subnet([1, 2, 3, 4, 5]).to_string(), "fd01:203:405::/64");
    }
}
