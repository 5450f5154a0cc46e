//! An instance's network on the host: its kept network namespace (made before its first start, removed
//! with it), its interfaces there as the store records them, and the files its network gives it
//! (/etc/hosts, /etc/resolv.conf, /etc/hostname). Blocking work: called from `spawn_blocking`.

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use vessel_api::{Instance, Network};
use vessel_net::netns::{self, NetNs};
use vessel_net::veth::{self, Endpoint};
use vessel_net::{bridge, ipam, link, netlink::Netlink};

use super::networks::{gateway_addresses, is_bridge};
use super::{Manager, ManagerError};
use crate::store::AttachmentRecord;

fn net_err(e: vessel_net::NetError) -> ManagerError {
    ManagerError::Internal(e.to_string())
}

/// A network's host link: its bridge (with the gateway addresses), or a macvlan network's VLAN
/// sub-interface; idempotent.
pub fn make_network_link(n: &Network) -> Result<(), ManagerError> {
    if is_bridge(n) {
        bridge::ensure(&bridge::Bridge {
            name: n.link.clone(),
            mtu: n.mtu,
            addresses: gateway_addresses(n),
        })
        .map(|_| ())
        .map_err(net_err)
    } else {
        let parent = n.parent.clone().unwrap_or_default();
        let parent_index = link::index(&parent).ok_or_else(|| {
            ManagerError::Internal(format!(
                "The parent interface {parent} of network {} is gone",
                n.name
            ))
        })?;
        let Some(vlan) = n.vlan else { return Ok(()) };
        let mut nl = Netlink::open().map_err(|e| ManagerError::Internal(format!("netlink: {e}")))?;
        if link::index(&n.link).is_none() {
            link::add_vlan(&mut nl, &n.link, parent_index, vlan).map_err(|e| {
                let why = match e.raw_os_error() {
                    Some(libc::EOPNOTSUPP) => "this kernel has no 802.1Q VLAN support (8021q)".into(),
                    _ => e.to_string(),
                };
                ManagerError::Internal(format!("Cannot create VLAN link {}: {why}", n.link))
            })?;
        }
        let i = link::index(&n.link).ok_or_else(|| ManagerError::Internal(format!("{} vanished", n.link)))?;
        link::set(
            &mut nl,
            i,
            link::LinkChange {
                up: true,
                ..Default::default()
            },
        )
        .map_err(|e| ManagerError::Internal(format!("Cannot bring {} up: {e}", n.link)))
    }
}

/// Removes what [`make_network_link`] made (a macvlan network's parent stays: it is the host's).
pub fn remove_network_link(n: &Network) -> Result<(), ManagerError> {
    if is_bridge(n) || n.vlan.is_some() {
        bridge::remove(&n.link).map_err(net_err)?;
    }
    Ok(())
}

impl Manager {
    pub(super) fn netns_path(&self, id: &str) -> PathBuf {
        self.cfg.run_dir.join("netns").join(id)
    }

    /// The instance's attachments, in the order they were made (the store's).
    pub(super) fn attachments_of(&self, id: &str) -> Result<Vec<AttachmentRecord>, ManagerError> {
        Ok(self
            .store
            .attachments()?
            .into_iter()
            .filter(|a| a.instance_id == id)
            .collect())
    }

    /// Before a start: the namespace and every recorded interface in it (those there already stay).
    pub(super) fn plumb(&self, inst: &Instance) -> Result<(), ManagerError> {
        if inst.config.network_mode.as_deref() == Some("host") {
            return Ok(());
        }
        let path = self.netns_path(&inst.id);
        let ns = if netns::is_namespace(&path) {
            NetNs::open(&path).map_err(net_err)?
        } else {
            NetNs::create(&path).map_err(net_err)?
        };
        for a in self.attachments_of(&inst.id)? {
            let present = ns
                .enter(|| Ok(link::index(&a.ifname).is_some()))
                .map_err(net_err)?;
            if !present {
                self.plumb_into(&ns, inst, &a)?;
            }
        }
        Ok(())
    }

    /// One interface into a running instance (connect).
    pub(super) fn plumb_one(&self, inst: &Instance, a: &AttachmentRecord) -> Result<(), ManagerError> {
        let ns = NetNs::open(&self.netns_path(&inst.id)).map_err(net_err)?;
        self.plumb_into(&ns, inst, a)
    }

    fn plumb_into(&self, ns: &NetNs, inst: &Instance, a: &AttachmentRecord) -> Result<(), ManagerError> {
        let n = self.store.network(&a.network_id)?;
        let all = self.attachments_of(&inst.id)?;
        let prefix = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| s.parse::<vessel_net::ipnet::IpNet>().ok())
                .map(|n| n.prefix_len())
                .unwrap_or(0)
        };
        // The default route of each family goes through the first network that has it.
        let first4 = all.iter().find(|x| x.ip4.is_some()).map(|x| x.seq) == Some(a.seq);
        let first6 = all.iter().find(|x| x.ip6.is_some()).map(|x| x.seq) == Some(a.seq);
        let mut ep = Endpoint {
            ifname: a.ifname.clone(),
            host_ifname: a.host_ifname.clone(),
            mac: ipam::parse_mac(&a.mac).unwrap_or_else(|| ipam::mac_from(ipam::random())),
            mtu: n.mtu,
            addresses: Vec::new(),
            gateways: Vec::new(),
            rate: inst.config.net_rate,
        };
        if let Some(ip) = a.ip4 {
            ep.addresses.push((IpAddr::V4(ip), prefix(&n.subnet)));
            if first4 && !n.internal {
                ep.gateways
                    .extend(n.gateway.as_deref().and_then(|g| g.parse::<IpAddr>().ok()));
            }
        }
        if let Some(ip) = a.ip6 {
            ep.addresses.push((IpAddr::V6(ip), prefix(&n.subnet6)));
            if first6 && !n.internal {
                ep.gateways
                    .extend(n.gateway6.as_deref().and_then(|g| g.parse::<IpAddr>().ok()));
            }
        }
        if is_bridge(&n) {
            veth::attach(ns, &n.link, &ep).map_err(net_err)?;
        } else {
            // macvlan: made on the parent (or its VLAN link) straight into the namespace under its
            // host-unique name, then renamed there.
            let parent = link::index(&n.link)
                .ok_or_else(|| ManagerError::Internal(format!("The parent link {} is gone", n.link)))?;
            let mut nl = Netlink::open().map_err(|e| ManagerError::Internal(format!("netlink: {e}")))?;
            link::add_macvlan(&mut nl, &a.host_ifname, parent, ns.as_fd(), Some(n.mtu)).map_err(|e| {
                ManagerError::Internal(format!("Cannot create macvlan link on {}: {e}", n.link))
            })?;
            ns.enter(|| {
                let mut nl = Netlink::open().map_err(|e| vessel_net::NetError::Link {
                    name: ep.ifname.clone(),
                    action: "open netlink for".into(),
                    source: e,
                })?;
                let i = link::index(&ep.host_ifname)
                    .ok_or_else(|| vessel_net::NetError::Missing(ep.host_ifname.clone()))?;
                link::set(
                    &mut nl,
                    i,
                    link::LinkChange {
                        name: Some(&ep.ifname),
                        ..Default::default()
                    },
                )
                .map_err(|e| vessel_net::NetError::Link {
                    name: ep.ifname.clone(),
                    action: "rename".into(),
                    source: e,
                })?;
                veth::configure_inside(&ep)
            })
            .map_err(net_err)?;
        }
        Ok(())
    }

    /// One interface out of a running instance (disconnect).
    pub(super) fn unplumb_one(&self, a: &AttachmentRecord) -> Result<(), ManagerError> {
        let path = self.netns_path(&a.instance_id);
        if netns::is_namespace(&path) {
            let ns = NetNs::open(&path).map_err(net_err)?;
            veth::detach(&ns, &a.ifname).map_err(net_err)?;
        }
        self.delete_host_link(&a.host_ifname);
        Ok(())
    }

    fn delete_host_link(&self, name: &str) {
        if let (Some(i), Ok(mut nl)) = (link::index(name), Netlink::open()) {
            let _ = link::delete(&mut nl, i);
        }
    }

    /// Everything of the instance's network on the host: host ends deleted now (not when the kernel gets
    /// round to the namespace), then the namespace.
    pub(super) fn unplumb_all(&self, id: &str) -> Result<(), ManagerError> {
        for a in self.attachments_of(id).unwrap_or_default() {
            self.delete_host_link(&a.host_ifname);
        }
        netns::remove(&self.netns_path(id)).map_err(net_err)
    }

    /// After a crash: namespaces nobody owns go; running instances get the interfaces the store records and
    /// lose those it does not. One line per repair.
    pub(super) fn reconcile_plumbing(&self) -> Result<Vec<String>, ManagerError> {
        let mut lines = Vec::new();
        let records = self.store.list()?;
        let dir = self.cfg.run_dir.join("netns");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !records.iter().any(|r| r.instance.id == id) {
                netns::remove(&entry.path()).map_err(net_err)?;
                lines.push(format!("network namespace {id}: removed (no instance has it)"));
            }
        }
        let atts = self.store.attachments()?;
        for r in records.iter().filter(|r| r.instance.state.status.is_active()) {
            let path = self.netns_path(&r.instance.id);
            if !netns::is_namespace(&path) {
                continue;
            }
            let ns = NetNs::open(&path).map_err(net_err)?;
            let mine: Vec<&AttachmentRecord> =
                atts.iter().filter(|a| a.instance_id == r.instance.id).collect();
            let present: Vec<String> = ns
                .enter(|| {
                    let mut nl = Netlink::open()
                        .map_err(|e| vessel_net::NetError::Missing(format!("netlink: {e}")))?;
                    link::names(&mut nl).map_err(|e| vessel_net::NetError::Missing(format!("links: {e}")))
                })
                .map_err(net_err)?;
            for a in &mine {
                if !present.contains(&a.ifname) {
                    self.plumb_into(&ns, &r.instance, a)?;
                    lines.push(format!(
                        "{}: interface {} plumbed again",
                        r.instance.name, a.ifname
                    ));
                }
            }
            for name in present.iter().filter(|n| n.starts_with("eth")) {
                if !mine.iter().any(|a| &a.ifname == name) {
                    veth::detach(&ns, name).map_err(net_err)?;
                    lines.push(format!(
                        "{}: interface {name} removed (no longer recorded)",
                        r.instance.name
                    ));
                }
            }
        }
        Ok(lines)
    }

    /// /etc/hosts, /etc/resolv.conf and /etc/hostname for the instance, written into its directory;
    /// returns (destination, source) pairs to bind-mount.
    pub(super) fn write_net_files(
        &self,
        inst: &Instance,
        hostname: &str,
    ) -> Result<Vec<(String, PathBuf)>, ManagerError> {
        let dir = self.cfg.instance_dir(&inst.id).join("net");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ManagerError::Internal(format!("Cannot create {}: {e}", dir.display())))?;
        let host_mode = inst.config.network_mode.as_deref() == Some("host");
        let atts = self.attachments_of(&inst.id)?;
        let nets = self.store.networks()?;
        let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for a in &atts {
            for ip in a.ip4.map(IpAddr::V4).into_iter().chain(a.ip6.map(IpAddr::V6)) {
                hosts.push_str(&format!("{ip}\t{hostname} {}\n", inst.name));
            }
        }
        if atts.is_empty() && !host_mode {
            hosts.push_str(&format!("127.0.1.1\t{hostname} {}\n", inst.name));
        }
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = if !inst.config.dns.is_empty() {
            inst.config
                .dns
                .iter()
                .map(|d| format!("nameserver {d}\n"))
                .collect()
        } else {
            // The resolver of the first bridge network the instance is on answers its neighbours' names.
            let gateway = atts.iter().find_map(|a| {
                let n = nets.iter().find(|n| n.id == a.network_id && is_bridge(n))?;
                n.gateway.clone().or_else(|| n.gateway6.clone())
            });
            match gateway {
                Some(g) => format!("nameserver {g}\noptions ndots:0\n"),
                None => host_resolv,
            }
        };
        let mut out = Vec::new();
        for (name, text) in [
            ("hosts", hosts),
            ("resolv.conf", resolv),
            ("hostname", format!("{hostname}\n")),
        ] {
            let path = dir.join(name);
            crate::supervisor::write_atomic(&path, text.as_bytes())
                .map_err(|e| ManagerError::Internal(format!("Cannot write {}: {e}", path.display())))?;
            out.push((format!("/etc/{name}"), path));
        }
        Ok(out)
    }
}
