//! Networks as vesseld's objects: create, list, inspect, delete, connect and disconnect; what every
//! network needs on the host (its bridge, its DNS resolver, vessel's nftables table) kept in step with the
//! store. An instance's own plumbing is in [`super::plumbing`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use vessel_api::{Attachment, ConnectRequest, Instance, Network, NetworkConfig, NetworkRequest};
use vessel_net::firewall::{Firewall, FirewallNetwork, Forward, Proto};
use vessel_net::ipam;
use vessel_net::ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{names, Manager, ManagerError};
use crate::dns::{DnsServer, SharedZone, Zone};
use crate::store::{AttachmentRecord, StoreError};

/// The network instances join when they name none (docker's `bridge`, podman's `podman`).
pub const DEFAULT_NETWORK: &str = "vessel0";

/// What runs for one network in vesseld: its DNS resolver and the names it answers.
pub struct NetworkRuntime {
    _dns: DnsServer,
    zone: SharedZone,
}

fn blocking_err(e: tokio::task::JoinError) -> ManagerError {
    ManagerError::Internal(e.to_string())
}

fn net_err(e: vessel_net::NetError) -> ManagerError {
    ManagerError::Internal(e.to_string())
}

fn parse_net(s: &Option<String>) -> Option<IpNet> {
    s.as_deref().and_then(|s| s.parse().ok())
}

fn gateway_of(gw: &Option<String>, net: &IpNet) -> IpAddr {
    gw.as_deref()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| ipam::default_gateway(net))
}

/// A network's bridge addresses (gateway/prefix, each family it has).
pub fn gateway_addresses(n: &Network) -> Vec<(IpAddr, u8)> {
    let mut out = Vec::new();
    for (s, g) in [(&n.subnet, &n.gateway), (&n.subnet6, &n.gateway6)] {
        if let Some(net) = parse_net(s) {
            out.push((gateway_of(g, &net), net.prefix_len()));
        }
    }
    out
}

pub fn is_bridge(n: &Network) -> bool {
    n.driver == "bridge"
}

impl Manager {
    /// This daemon's nftables table.
    pub(super) fn firewall_table(&self) -> String {
        if self.cfg.name == "vessel" {
            "vessel".into()
        } else {
            format!("vessel-{}", self.cfg.name)
        }
    }

    /// `POST /1.0/networks`.
    pub async fn create_network(self: &Arc<Self>, cfg: NetworkConfig) -> Result<Network, ManagerError> {
        let _g = self.net_lock.lock().await;
        self.create_network_locked(cfg).await
    }

    async fn create_network_locked(self: &Arc<Self>, cfg: NetworkConfig) -> Result<Network, ManagerError> {
        let network = self.plan_network(cfg)?;
        self.store.insert_network(&network).map_err(|e| match e {
            StoreError::NameTaken(n) => {
                ManagerError::Conflict(format!("A network named {n:?} exists already"))
            }
            e => e.into(),
        })?;
        let n2 = network.clone();
        let made = tokio::task::spawn_blocking(move || super::plumbing::make_network_link(&n2))
            .await
            .map_err(blocking_err)?;
        if let Err(e) = made {
            let n2 = network.clone();
            let _ = tokio::task::spawn_blocking(move || super::plumbing::remove_network_link(&n2)).await;
            let _ = self.store.delete_network(&network.id);
            return Err(e);
        }
        if let Err(e) = self.start_network_runtime(&network).await {
            let _ = self.store.delete_network(&network.id);
            let n2 = network.clone();
            let _ = tokio::task::spawn_blocking(move || super::plumbing::remove_network_link(&n2)).await;
            return Err(e);
        }
        self.sync_firewall().await?;
        Ok(network)
    }

    /// A new network's record from its config: everything checked and chosen, nothing done yet.
    fn plan_network(&self, cfg: NetworkConfig) -> Result<Network, ManagerError> {
        names::validate(&cfg.name)?;
        if matches!(cfg.name.as_str(), "none" | "host") {
            return Err(ManagerError::Invalid(format!(
                "{:?} is a network mode, not a network name",
                cfg.name
            )));
        }
        let driver = cfg.driver.clone().unwrap_or_else(|| "bridge".into());
        let invalid = |m: String| ManagerError::Invalid(m);
        match driver.as_str() {
            "bridge" => {
                if cfg.parent.is_some() || cfg.vlan.is_some() {
                    return Err(invalid("--parent and --vlan belong to --driver macvlan".into()));
                }
            }
            "macvlan" => {
                let Some(p) = &cfg.parent else {
                    return Err(invalid("A macvlan network needs --parent IFACE".into()));
                };
                if vessel_net::link::index(p).is_none() {
                    return Err(invalid(format!("The parent interface {p:?} does not exist")));
                }
                if cfg.subnet.is_none() {
                    return Err(invalid(
                        "A macvlan network needs --subnet (the parent network's)".into(),
                    ));
                }
                if cfg.internal {
                    return Err(invalid("--internal applies to bridge networks".into()));
                }
                if let Some(v) = cfg.vlan {
                    if !(1..=4094).contains(&v) {
                        return Err(invalid(format!("VLAN id {v} is not in 1-4094")));
                    }
                    if p.len() + 1 + v.to_string().len() > 15 {
                        return Err(invalid(format!(
                            "{p}.{v} is longer than an interface name may be"
                        )));
                    }
                }
                // A VLAN sub-interface vesseld makes goes with its network: it may be neither one there
                // already (the host's, or another network's) nor the parent of another network.
                let others = self.store.networks()?;
                let sub = cfg.vlan.map(|v| format!("{p}.{v}"));
                let owner = |l: &str| others.iter().find(|o| o.vlan.is_some() && o.link == l);
                if let Some(sub) = &sub {
                    if let Some(o) = owner(sub) {
                        return Err(ManagerError::Conflict(format!(
                            "VLAN link {sub} belongs to network {} already",
                            o.name
                        )));
                    }
                    if vessel_net::link::index(sub).is_some() {
                        return Err(ManagerError::Conflict(format!(
                            "VLAN link {sub} exists already on the host: give it as --parent, without --vlan"
                        )));
                    }
                } else if let Some(o) = owner(p) {
                    return Err(ManagerError::Conflict(format!(
                        "{p} is the VLAN link of network {}: it goes with that network",
                        o.name
                    )));
                }
            }
            other => {
                return Err(invalid(format!(
                    "Unknown network driver {other:?}: use bridge or macvlan"
                )))
            }
        }
        if let Some(m) = cfg.mtu {
            if !(576..=9000).contains(&m) {
                return Err(invalid(format!("MTU {m} is not in 576-9000")));
            }
        }
        let others = self.store.networks()?;
        // Each other network's subnets, with the network they belong to.
        let taken: Vec<(IpNet, &Network)> = others
            .iter()
            .flat_map(|n| {
                [parse_net(&n.subnet), parse_net(&n.subnet6)]
                    .into_iter()
                    .flatten()
                    .map(move |s| (s, n))
            })
            .collect();
        let subnet4: Ipv4Net = match &cfg.subnet {
            Some(s) => match ipam::parse_subnet(s).map_err(|e| invalid(e.to_string()))? {
                IpNet::V4(n) => n,
                IpNet::V6(_) => return Err(invalid(format!("--subnet {s} is IPv6: give it as --subnet6"))),
            },
            None => {
                let mut avoid: Vec<IpNet> = taken.iter().map(|(t, _)| *t).collect();
                avoid.extend(vessel_net::link::ipv4_routes().into_iter().map(IpNet::V4));
                ipam::pick_subnet(&avoid).map_err(|e| invalid(e.to_string()))?
            }
        };
        let subnet6: Option<Ipv6Net> = match (&cfg.subnet6, cfg.ipv6) {
            (Some(s), _) => match ipam::parse_subnet(s).map_err(|e| invalid(e.to_string()))? {
                IpNet::V6(n) => Some(n),
                IpNet::V4(_) => return Err(invalid(format!("--subnet6 {s} is not IPv6"))),
            },
            (None, true) => Some(ipam::ula_subnet(ipam::random())),
            (None, false) => None,
        };
        if cfg.gateway6.is_some() && subnet6.is_none() {
            return Err(invalid(
                "--gateway6 needs an IPv6 subnet (--ipv6 or --subnet6)".into(),
            ));
        }
        let mine: Vec<IpNet> = std::iter::once(IpNet::V4(subnet4))
            .chain(subnet6.map(IpNet::V6))
            .collect();
        for m in &mine {
            if let Some((t, n)) = taken.iter().find(|(t, _)| ipam::overlaps(t, m)) {
                return Err(ManagerError::Conflict(format!(
                    "Subnet {m} overlaps {t} of network {}",
                    n.name
                )));
            }
        }
        let gateway = match &cfg.gateway {
            Some(g) => {
                let a: IpAddr = g
                    .parse()
                    .map_err(|_| invalid(format!("Gateway {g:?} is not an IP address")))?;
                ipam::check_gateway(&IpNet::V4(subnet4), a).map_err(|e| invalid(e.to_string()))?;
                a
            }
            None => ipam::default_gateway(&IpNet::V4(subnet4)),
        };
        let gateway6 = match (&cfg.gateway6, subnet6) {
            (Some(g), Some(net)) => {
                let a: IpAddr = g
                    .parse()
                    .map_err(|_| invalid(format!("Gateway {g:?} is not an IP address")))?;
                ipam::check_gateway(&IpNet::V6(net), a).map_err(|e| invalid(e.to_string()))?;
                Some(a)
            }
            (None, Some(net)) => Some(ipam::default_gateway(&IpNet::V6(net))),
            _ => None,
        };
        let id = names::random_id()?;
        let link = match driver.as_str() {
            "macvlan" => {
                let p = cfg.parent.clone().unwrap_or_default();
                match cfg.vlan {
                    Some(v) => format!("{p}.{v}"),
                    None => p,
                }
            }
            _ if cfg.name == DEFAULT_NETWORK && self.cfg.name == "vessel" => DEFAULT_NETWORK.into(),
            _ => format!("vessel-{}", &id[..8]),
        };
        Ok(Network {
            id,
            name: cfg.name,
            driver,
            subnet: Some(subnet4.to_string()),
            gateway: Some(gateway.to_string()),
            subnet6: subnet6.map(|s| s.to_string()),
            gateway6: gateway6.map(|g| g.to_string()),
            internal: cfg.internal,
            mtu: cfg.mtu.unwrap_or(1500),
            link,
            parent: cfg.parent,
            vlan: cfg.vlan,
            labels: cfg.labels,
            created_at: vessel_runtime::clock::now_rfc3339(),
            instances: Vec::new(),
        })
    }

    /// The default network, made on first use.
    pub(super) async fn default_network(self: &Arc<Self>) -> Result<Network, ManagerError> {
        let _g = self.net_lock.lock().await;
        match self.store.network(DEFAULT_NETWORK) {
            Ok(n) => Ok(n),
            Err(StoreError::NotFound(_)) => {
                self.create_network_locked(NetworkConfig {
                    name: DEFAULT_NETWORK.into(),
                    ..Default::default()
                })
                .await
            }
            Err(e) => Err(e.into()),
        }
    }

    fn with_instances(
        &self,
        mut n: Network,
        names_by_id: &HashMap<String, String>,
        atts: &[AttachmentRecord],
    ) -> Network {
        n.instances = atts
            .iter()
            .filter(|a| a.network_id == n.id)
            .filter_map(|a| names_by_id.get(&a.instance_id).cloned())
            .collect();
        n
    }

    fn names_by_id(&self) -> Result<HashMap<String, String>, ManagerError> {
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|r| (r.instance.id, r.instance.name))
            .collect())
    }

    pub fn networks(&self) -> Result<Vec<Network>, ManagerError> {
        let names = self.names_by_id()?;
        let atts = self.store.attachments()?;
        Ok(self
            .store
            .networks()?
            .into_iter()
            .map(|n| self.with_instances(n, &names, &atts))
            .collect())
    }

    pub fn network(&self, name_or_id: &str) -> Result<Network, ManagerError> {
        let n = self.store.network(name_or_id)?;
        Ok(self.with_instances(n, &self.names_by_id()?, &self.store.attachments()?))
    }

    /// `DELETE /1.0/networks/NAME`: refused while an instance is on it.
    pub async fn delete_network(self: &Arc<Self>, name_or_id: &str) -> Result<(), ManagerError> {
        let _g = self.net_lock.lock().await;
        let n = self.store.network(name_or_id)?;
        self.store.delete_network(&n.id).map_err(|e| match e {
            StoreError::Conflict(m) => ManagerError::Conflict(format!("Network {}: {m}", n.name)),
            e => e.into(),
        })?;
        self.network_runtimes().remove(&n.id);
        let n2 = n.clone();
        tokio::task::spawn_blocking(move || super::plumbing::remove_network_link(&n2))
            .await
            .map_err(blocking_err)??;
        self.sync_firewall().await
    }

    /// `POST /1.0/networks/NAME/connect`: the instance gets an interface on the network (at once when it
    /// runs, else at its next start).
    pub async fn connect(
        self: &Arc<Self>,
        network: &str,
        req: ConnectRequest,
    ) -> Result<Instance, ManagerError> {
        let id = self.find(&req.instance)?.instance.id;
        let live = self.live(&id);
        let _v = live.verb.lock().await;
        let r = self.store.get(&id)?;
        if r.instance.config.network_mode.is_some() {
            return Err(ManagerError::Conflict(format!(
                "Instance {} uses network mode {}: it cannot join networks",
                r.instance.name,
                r.instance.config.network_mode.as_deref().unwrap_or_default()
            )));
        }
        let net = self.store.network(network)?;
        let request = NetworkRequest {
            network: net.name.clone(),
            ip: req.ip,
            ip6: req.ip6,
            mac: req.mac,
            aliases: req.aliases,
        };
        for a in &request.aliases {
            names::validate(a)?;
        }
        if r.instance.kind == vessel_api::Kind::Vm {
            if r.instance.state.status.is_active() {
                return Err(ManagerError::Conflict(format!(
                    "Instance {} is a running VM: it joins networks when stopped (no NIC hot-plug)",
                    r.instance.name
                )));
            }
            if !is_bridge(&net) {
                return Err(ManagerError::Invalid(format!(
                    "Network {} is a macvlan network: a VM joins bridge networks",
                    net.name
                )));
            }
        }
        let att = self.store.attach(&id, &net.id, &request)?;
        if r.instance.state.status.is_active() {
            let mgr = self.clone();
            let inst = r.instance.clone();
            let att2 = att.clone();
            let plumbed = tokio::task::spawn_blocking(move || mgr.plumb_one(&inst, &att2))
                .await
                .map_err(blocking_err)?;
            if let Err(e) = plumbed {
                let _ = self.store.detach(&id, &net.id);
                return Err(e);
            }
        }
        self.after_attachments_changed().await?;
        let r = self.store.get(&id)?;
        self.emit("connected", &r.instance, None);
        Ok(self.with_networks(r.instance))
    }

    /// `POST /1.0/networks/NAME/disconnect`.
    pub async fn disconnect(
        self: &Arc<Self>,
        network: &str,
        instance: &str,
    ) -> Result<Instance, ManagerError> {
        let id = self.find(instance)?.instance.id;
        let live = self.live(&id);
        let _v = live.verb.lock().await;
        let r = self.store.get(&id)?;
        let net = self.store.network(network)?;
        if r.instance.kind == vessel_api::Kind::Vm && r.instance.state.status.is_active() {
            return Err(ManagerError::Conflict(format!(
                "Instance {} is a running VM: it leaves networks when stopped (no NIC hot-plug)",
                r.instance.name
            )));
        }
        let att = self.store.detach(&id, &net.id)?;
        if r.instance.state.status.is_active() {
            let mgr = self.clone();
            tokio::task::spawn_blocking(move || mgr.unplumb_one(&att))
                .await
                .map_err(blocking_err)??;
        }
        self.after_attachments_changed().await?;
        let r = self.store.get(&id)?;
        self.emit("disconnected", &r.instance, None);
        Ok(self.with_networks(r.instance))
    }

    /// An instance as the API shows it: with its interfaces.
    pub fn with_networks(&self, inst: Instance) -> Instance {
        match (self.store.attachments(), self.store.networks()) {
            (Ok(atts), Ok(nets)) => with_attachments(inst, &atts, &nets),
            _ => inst,
        }
    }

    /// Every instance as the API shows it, the attachments and networks read once for all.
    pub(super) fn all_with_networks(&self, list: Vec<Instance>) -> Result<Vec<Instance>, ManagerError> {
        let atts = self.store.attachments()?;
        let nets = self.store.networks()?;
        Ok(list
            .into_iter()
            .map(|i| with_attachments(i, &atts, &nets))
            .collect())
    }

    pub(super) fn network_runtimes(&self) -> std::sync::MutexGuard<'_, HashMap<String, NetworkRuntime>> {
        self.net_runtimes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The DNS resolver of a bridge network, on its gateway addresses.
    async fn start_network_runtime(&self, n: &Network) -> Result<(), ManagerError> {
        if !is_bridge(n) || self.network_runtimes().contains_key(&n.id) {
            return Ok(());
        }
        let zone: SharedZone = Default::default();
        let listen: Vec<IpAddr> = gateway_addresses(n).into_iter().map(|(a, _)| a).collect();
        let dns = DnsServer::start(&listen, self.cfg.dns_port, zone.clone(), self.dns_upstreams())
            .await
            .map_err(|e| {
                ManagerError::Internal(format!(
                    "Cannot start the DNS resolver of network {}: {e}",
                    n.name
                ))
            })?;
        self.network_runtimes()
            .insert(n.id.clone(), NetworkRuntime { _dns: dns, zone });
        self.refresh_zones()?;
        Ok(())
    }

    fn dns_upstreams(&self) -> Vec<SocketAddr> {
        if !self.cfg.dns_upstreams.is_empty() {
            return self.cfg.dns_upstreams.clone();
        }
        crate::dns::upstreams_from_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )
    }

    /// Every network's names, from the store.
    pub(super) fn refresh_zones(&self) -> Result<(), ManagerError> {
        let names = self.names_by_id()?;
        let atts = self.store.attachments()?;
        let runtimes = self.network_runtimes();
        for (net_id, rt) in runtimes.iter() {
            let mut zone = Zone::new();
            for a in atts.iter().filter(|a| &a.network_id == net_id) {
                let Some(name) = names.get(&a.instance_id) else {
                    continue;
                };
                let short: String = a.instance_id.chars().take(12).collect();
                for n in std::iter::once(name)
                    .chain(a.aliases.iter())
                    .chain(std::iter::once(&short))
                {
                    for ip in a.ip4.map(IpAddr::V4).into_iter().chain(a.ip6.map(IpAddr::V6)) {
                        zone.insert(n, ip);
                    }
                }
            }
            *rt.zone.write().unwrap_or_else(|p| p.into_inner()) = zone;
        }
        Ok(())
    }

    /// After an attachment came or went (or an instance was renamed): names and forwards follow.
    pub(super) async fn after_attachments_changed(&self) -> Result<(), ManagerError> {
        self.refresh_zones()?;
        self.sync_firewall().await
    }

    /// Vessel's nftables table from the store: every network and every forward of every instance.
    pub(super) async fn sync_firewall(&self) -> Result<(), ManagerError> {
        let nets = self.store.networks()?;
        let atts = self.store.attachments()?;
        let records = self.store.list()?;
        let mut fw = Firewall {
            table: self.firewall_table(),
            ..Default::default()
        };
        for n in nets.iter().filter(|n| is_bridge(n)) {
            fw.networks.push(FirewallNetwork {
                bridge: n.link.clone(),
                subnet4: parse_net(&n.subnet).and_then(|s| match s {
                    IpNet::V4(s) => Some(s),
                    IpNet::V6(_) => None,
                }),
                subnet6: parse_net(&n.subnet6).and_then(|s| match s {
                    IpNet::V6(s) => Some(s),
                    IpNet::V4(_) => None,
                }),
                internal: n.internal,
            });
        }
        for r in &records {
            // Forwards go to the instance's first address on a non-internal bridge network.
            let Some(a) = atts.iter().find(|a| {
                a.instance_id == r.instance.id
                    && nets
                        .iter()
                        .any(|n| n.id == a.network_id && is_bridge(n) && !n.internal)
            }) else {
                continue;
            };
            for p in &r.instance.config.ports {
                fw.forwards.push(Forward {
                    proto: if p.proto == "udp" { Proto::Udp } else { Proto::Tcp },
                    host_ip: p.host_ip.as_deref().and_then(|h| h.parse().ok()),
                    host_ports: p.host_range(),
                    target4: a.ip4,
                    target6: a.ip6,
                    target_ports: p.range(),
                });
            }
        }
        let _g = self.firewall_lock.lock().await;
        tokio::task::spawn_blocking(move || vessel_net::firewall::apply(&fw))
            .await
            .map_err(blocking_err)?
            .map_err(net_err)
    }

    /// At start-up: every network's link and resolver, and the firewall.
    pub(super) async fn restore_networks(
        self: &Arc<Self>,
        report: &mut Vec<String>,
    ) -> Result<(), ManagerError> {
        for n in self.store.networks()? {
            let n2 = n.clone();
            let made = tokio::task::spawn_blocking(move || super::plumbing::make_network_link(&n2))
                .await
                .map_err(blocking_err)?;
            if let Err(e) = made {
                report.push(format!("network {}: {e}", n.name));
                continue;
            }
            if let Err(e) = self.start_network_runtime(&n).await {
                report.push(format!("network {}: {e}", n.name));
            }
        }
        self.sync_firewall().await
    }
}

/// Whether two forwards could take the same host port: same protocol, overlapping ranges, and the same
/// host address or either on all addresses.
fn clash(a: &vessel_api::PortMapping, b: &vessel_api::PortMapping) -> bool {
    let (a0, a1) = a.host_range();
    let (b0, b1) = b.host_range();
    a.proto == b.proto
        && a0 <= b1
        && b0 <= a1
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

/// Whether something on the host listens on the port already (bound for a moment and let go).
fn port_in_use(p: &vessel_api::PortMapping, port: u16) -> bool {
    let ip: IpAddr = p
        .host_ip
        .as_deref()
        .and_then(|h| h.parse().ok())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = SocketAddr::new(ip, port);
    let res = if p.proto == "udp" {
        std::net::UdpSocket::bind(addr).map(|_| ())
    } else {
        std::net::TcpListener::bind(addr).map(|_| ())
    };
    matches!(res, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

impl Manager {
    /// A new instance's forwards against every other instance's and against the host's listeners.
    pub(super) fn check_ports(&self, inst: &Instance) -> Result<(), ManagerError> {
        let mine = &inst.config.ports;
        for (i, p) in mine.iter().enumerate() {
            if let Some(q) = mine[..i].iter().find(|q| clash(p, q)) {
                return Err(ManagerError::Invalid(format!(
                    "Port forwards {q} and {p} overlap"
                )));
            }
        }
        if mine.is_empty() {
            return Ok(());
        }
        for r in self.store.list()? {
            for q in &r.instance.config.ports {
                if let Some(p) = mine.iter().find(|p| clash(p, q)) {
                    return Err(ManagerError::Conflict(format!(
                        "Port {} of {p} is already forwarded to instance {} ({q})",
                        p.host_port, r.instance.name
                    )));
                }
            }
        }
        for p in mine {
            let (a, b) = p.host_range();
            if let Some(port) = (a..=b).find(|port| port_in_use(p, *port)) {
                return Err(ManagerError::Conflict(format!(
                    "Port {port}/{} is in use on the host",
                    p.proto
                )));
            }
        }
        Ok(())
    }
}

/// `inst` with its interfaces, from all attachments and networks.
fn with_attachments(mut inst: Instance, atts: &[AttachmentRecord], nets: &[Network]) -> Instance {
    inst.networks = atts
        .iter()
        .filter(|a| a.instance_id == inst.id)
        .filter_map(|a| {
            let n = nets.iter().find(|n| n.id == a.network_id)?;
            let prefix = |s: &Option<String>| parse_net(s).map(|n| n.prefix_len()).unwrap_or(0);
            Some(Attachment {
                network: n.name.clone(),
                ifname: a.ifname.clone(),
                mac: a.mac.clone(),
                ip: a.ip4.map(|ip| format!("{ip}/{}", prefix(&n.subnet))),
                gateway: a.ip4.and(n.gateway.clone()),
                ip6: a.ip6.map(|ip| format!("{ip}/{}", prefix(&n.subnet6))),
                gateway6: a.ip6.and(n.gateway6.clone()),
                aliases: a.aliases.clone(),
            })
        })
        .collect();
    inst
}
