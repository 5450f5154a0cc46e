//! Networks: `/1.0/networks[/NAME[/connect|disconnect]]`, an instance's attachments and port forwards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /1.0/networks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub name: String,
    /// bridge (default) or macvlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// IPv4 subnet (CIDR); default: a free /24 of 10.77.0.0/16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Default: the subnet's first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Also IPv6: `subnet6`, or a unique local /64 chosen at random.
    #[serde(default)]
    pub ipv6: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// No traffic leaves the network (no egress, no forwards).
    #[serde(default)]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// macvlan (and VLAN): the host interface the network is cut from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// An 802.1Q VLAN id on `parent` (the sub-interface is made and removed with the network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `GET /1.0/networks/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    pub internal: bool,
    pub mtu: u32,
    /// The host link: the bridge, or the parent (or its VLAN sub-interface) of a macvlan network.
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub created_at: String,
    /// Names of the instances attached.
    #[serde(default)]
    pub instances: Vec<String>,
}

/// An instance's wish to be on a network, at create (`networks`) or by `connect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// The network's name (connect: taken from the path).
    #[serde(default)]
    pub network: String,
    /// A static IPv4 address in the subnet (default: the lowest free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// More names the instance answers to on this network's DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// `POST /1.0/networks/NAME/connect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    pub instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// `POST /1.0/networks/NAME/disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    pub instance: String,
}

/// One network interface of an instance, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attachment {
    pub network: String,
    /// Its name inside the instance.
    pub ifname: String,
    pub mac: String,
    /// ADDRESS/PREFIX.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A port forward: `-p [HOST_IP:]HOST_PORT[-END]:PORT[-END][/tcp|udp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// tcp (default) or udp.
    #[serde(default = "PortMapping::tcp")]
    pub proto: String,
    /// A host address to forward from (default: all of the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    pub host_port: u16,
    /// The last host port of a range (default: host_port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_end: Option<u16>,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_end: Option<u16>,
}

impl PortMapping {
    fn tcp() -> String {
        "tcp".into()
    }

    /// Parses docker's `-p` syntax. Only explicit host ports: vessel does not pick ports at random.
    pub fn parse(s: &str) -> Result<PortMapping, String> {
        let bad = |why: &str| format!("Invalid port forward {s:?}: {why}");
        let (spec, proto) = match s.rsplit_once('/') {
            Some((a, p)) if p == "tcp" || p == "udp" => (a, p.to_string()),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
            None => (s, "tcp".to_string()),
        };
        // The host address may be IPv6 in brackets: [::1]:8080:80.
        let (host_ip, rest) = if let Some(r) = spec.strip_prefix('[') {
            let (ip, rest) = r
                .split_once("]:")
                .ok_or_else(|| bad("an IPv6 host address needs ]:"))?;
            (Some(ip.to_string()), rest)
        } else {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                2 => (None, spec),
                3 => (Some(parts[0].to_string()), &spec[parts[0].len() + 1..]),
                _ => return Err(bad("write [HOST_IP:]HOST_PORT:PORT[/tcp|udp]")),
            }
        };
        let (host, port) = rest
            .split_once(':')
            .ok_or_else(|| bad("write [HOST_IP:]HOST_PORT:PORT[/tcp|udp]"))?;
        let range = |r: &str| -> Result<(u16, Option<u16>), String> {
            let num = |p: &str| {
                p.parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(&format!("{p:?} is not a port (1-65535)")))
            };
            match r.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if b < a {
                        return Err(bad("a range must go upwards"));
                    }
                    Ok((a, Some(b)))
                }
                None => Ok((num(r)?, None)),
            }
        };
        let (host_port, host_port_end) = range(host)?;
        let (port, port_end) = range(port)?;
        let m = PortMapping {
            proto,
            host_ip: host_ip.filter(|h| !h.is_empty()),
            host_port,
            host_port_end,
            port,
            port_end,
        };
        m.validate()?;
        Ok(m)
    }

    /// (first, last) host ports.
    pub fn host_range(&self) -> (u16, u16) {
        (self.host_port, self.host_port_end.unwrap_or(self.host_port))
    }

    pub fn range(&self) -> (u16, u16) {
        (self.port, self.port_end.unwrap_or(self.port))
    }

    pub fn validate(&self) -> Result<(), String> {
        let (h0, h1) = self.host_range();
        let (p0, p1) = self.range();
        let shown = self.to_string();
        if self.proto != "tcp" && self.proto != "udp" {
            return Err(format!(
                "Invalid port forward {shown}: the protocol must be tcp or udp"
            ));
        }
        if h0 == 0 || p0 == 0 || h1 < h0 || p1 < p0 {
            return Err(format!(
                "Invalid port forward {shown}: ports are 1-65535, ranges go upwards"
            ));
        }
        if h1 - h0 != p1 - p0 {
            return Err(format!(
                "Invalid port forward {shown}: the host range and the instance's range differ in length"
            ));
        }
        if let Some(ip) = &self.host_ip {
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| format!("Invalid port forward {shown}: {ip:?} is not an IP address"))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |a: u16, b: Option<u16>| match b {
            Some(b) if b != a => format!("{a}-{b}"),
            _ => a.to_string(),
        };
        match &self.host_ip {
            Some(ip) if ip.contains(':') => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        write!(
            f,
            "{}:{}/{}",
            r(self.host_port, self.host_port_end),
            r(self.port, self.port_end),
            self.proto
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_port_syntax() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!((p.host_port, p.port, p.proto.as_str()), (8080, 80, "tcp"));
        let p = PortMapping::parse("127.0.0.1:5000-5002:6000-6002/udp").unwrap();
        assert_eq!(p.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!((p.host_range(), p.range()), ((5000, 5002), (6000, 6002)));
        assert_eq!(p.to_string(), "127.0.0.1:5000-5002:6000-6002/udp");
        let p = PortMapping::parse("[::1]:53:53/udp").unwrap();
        assert_eq!(p.to_string(), "[::1]:53:53/udp");
        for bad in [
            "80", "0:80", "70000:80", "9-8:1-2", "1-3:1-2", "a:80", "1:2/sctp", "x.y:1:2", "1:2:3:4",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }
}
