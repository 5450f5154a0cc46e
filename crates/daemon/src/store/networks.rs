//! Networks and attachments in the SQLite store. Choosing an address and recording it is one
//! transaction, and the table's constraints refuse a second holder of an address, so no crash or race
//! ever gives one address to two instances.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rusqlite::{params, OptionalExtension, Transaction};
use vessel_api::{Network, NetworkRequest};
use vessel_net::ipam;
use vessel_net::ipnet::IpNet;

use super::sqlite::{json, unique_violation, SqliteStore};
use super::StoreError;

/// One instance's interface on one network, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentRecord {
    pub instance_id: String,
    pub network_id: String,
    /// The order of attachment: the first network of each address family gives the default route.
    pub seq: i64,
    pub ifname: String,
    pub host_ifname: String,
    pub mac: String,
    pub ip4: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub aliases: Vec<String>,
}

/// The records of networks and of which instance is on which, with its addresses.
pub trait NetworkStore: Send + Sync {
    fn insert_network(&self, n: &Network) -> Result<(), StoreError>;
    fn networks(&self) -> Result<Vec<Network>, StoreError>;
    /// By exact name or id, or unique id prefix.
    fn network(&self, name_or_id: &str) -> Result<Network, StoreError>;
    /// Refused (Conflict) while an instance is attached.
    fn delete_network(&self, id: &str) -> Result<(), StoreError>;
    /// Attaches an instance, choosing (or checking the requested) addresses and MAC, in one transaction.
    fn attach(
        &self,
        instance_id: &str,
        network_id: &str,
        req: &NetworkRequest,
    ) -> Result<AttachmentRecord, StoreError>;
    fn detach(&self, instance_id: &str, network_id: &str) -> Result<AttachmentRecord, StoreError>;
    /// Every attachment, in attachment order.
    fn attachments(&self) -> Result<Vec<AttachmentRecord>, StoreError>;
}

const ATT_COLUMNS: &str = "instance_id, network_id, seq, ifname, host_ifname, mac, ip4, ip6, aliases";

fn attachment_row(row: &rusqlite::Row) -> rusqlite::Result<AttachmentRecord> {
    let ip4: Option<String> = row.get(6)?;
    let ip6: Option<String> = row.get(7)?;
    let aliases: String = row.get(8)?;
    Ok(AttachmentRecord {
        instance_id: row.get(0)?,
        network_id: row.get(1)?,
        seq: row.get(2)?,
        ifname: row.get(3)?,
        host_ifname: row.get(4)?,
        mac: row.get(5)?,
        ip4: ip4.and_then(|s| s.parse().ok()),
        ip6: ip6.and_then(|s| s.parse().ok()),
        aliases: serde_json::from_str(&aliases).unwrap_or_default(),
    })
}

fn network_row(row: &rusqlite::Row) -> rusqlite::Result<Result<Network, StoreError>> {
    let id: String = row.get(0)?;
    let spec: String = row.get(1)?;
    Ok(serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt {
        id,
        reason: format!("network: {e}"),
    }))
}

fn find_network(tx: &rusqlite::Connection, name_or_id: &str) -> Result<Network, StoreError> {
    let exact = tx
        .query_row(
            "SELECT id, spec FROM networks WHERE name = ?1 OR id = ?1",
            [name_or_id],
            network_row,
        )
        .optional()?;
    if let Some(n) = exact {
        return n;
    }
    let is_hex = !name_or_id.is_empty() && name_or_id.chars().all(|c| c.is_ascii_hexdigit());
    if is_hex {
        let mut stmt = tx.prepare("SELECT id, spec FROM networks WHERE substr(id, 1, ?2) = ?1 LIMIT 2")?;
        let mut found: Vec<Result<Network, StoreError>> = stmt
            .query_map(params![name_or_id, name_or_id.len() as i64], network_row)?
            .collect::<Result<_, _>>()?;
        match found.len() {
            1 => return found.remove(0),
            2 => return Err(StoreError::Ambiguous(name_or_id.into())),
            _ => {}
        }
    }
    Err(StoreError::NotFound(format!("network {name_or_id}")))
}

fn subnet(s: &Option<String>) -> Option<IpNet> {
    s.as_deref().and_then(|s| s.parse().ok())
}

fn gateway(g: &Option<String>, net: &IpNet) -> IpAddr {
    g.as_deref()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| ipam::default_gateway(net))
}

/// An address for the attachment: the requested one (checked), else the lowest free one.
fn choose(
    tx: &Transaction,
    network: &Network,
    net: &IpNet,
    gw: IpAddr,
    column: &str,
    requested: &Option<String>,
) -> Result<IpAddr, StoreError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {column} FROM attachments WHERE network_id = ?1 AND {column} IS NOT NULL"
    ))?;
    let used: HashSet<IpAddr> = stmt
        .query_map([&network.id], |r| r.get::<_, String>(0))?
        .filter_map(|r| r.ok()?.parse().ok())
        .collect();
    match requested {
        Some(r) => {
            let addr: IpAddr = r
                .parse()
                .map_err(|_| StoreError::Invalid(format!("{r:?} is not an IP address")))?;
            ipam::check_static(net, gw, addr, &used).map_err(|e| match e {
                ipam::IpamError::InUse(_) => StoreError::Conflict(e.to_string()),
                e => StoreError::Invalid(e.to_string()),
            })?;
            Ok(addr)
        }
        None => ipam::allocate(net, gw, &used).map_err(|e| StoreError::Conflict(e.to_string())),
    }
}

impl NetworkStore for SqliteStore {
    fn insert_network(&self, n: &Network) -> Result<(), StoreError> {
        let res = self.conn().execute(
            "INSERT INTO networks (id, name, spec) VALUES (?1, ?2, ?3)",
            params![n.id, n.name, json(n)],
        );
        match res {
            Ok(_) => Ok(()),
            Err(e) if unique_violation(&e) => Err(StoreError::NameTaken(n.name.clone())),
            Err(e) => Err(e.into()),
        }
    }

    fn networks(&self) -> Result<Vec<Network>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, spec FROM networks ORDER BY name")?;
        let rows: Vec<Result<Network, StoreError>> =
            stmt.query_map([], network_row)?.collect::<Result<_, _>>()?;
        rows.into_iter().collect()
    }

    fn network(&self, name_or_id: &str) -> Result<Network, StoreError> {
        find_network(&self.conn(), name_or_id)
    }

    fn delete_network(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let users: i64 = tx.query_row(
            "SELECT count(*) FROM attachments WHERE network_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if users > 0 {
            return Err(StoreError::Conflict(format!(
                "The network is in use by {users} instance(s): disconnect or delete them first"
            )));
        }
        let n = tx.execute("DELETE FROM networks WHERE id = ?1", [id])?;
        tx.commit()?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("network {id}")));
        }
        Ok(())
    }

    fn attach(
        &self,
        instance_id: &str,
        network_id: &str,
        req: &NetworkRequest,
    ) -> Result<AttachmentRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let network = find_network(&tx, network_id)?;
        let already: bool = tx
            .query_row(
                "SELECT 1 FROM attachments WHERE instance_id = ?1 AND network_id = ?2",
                params![instance_id, network.id],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if already {
            return Err(StoreError::Conflict(format!(
                "The instance is already on network {}",
                network.name
            )));
        }
        let ip4 = match subnet(&network.subnet) {
            Some(net) => Some(choose(
                &tx,
                &network,
                &net,
                gateway(&network.gateway, &net),
                "ip4",
                &req.ip,
            )?),
            None if req.ip.is_some() => {
                return Err(StoreError::Invalid(format!(
                    "Network {} has no IPv4 subnet",
                    network.name
                )))
            }
            None => None,
        };
        let ip6 = match subnet(&network.subnet6) {
            Some(net) => Some(choose(
                &tx,
                &network,
                &net,
                gateway(&network.gateway6, &net),
                "ip6",
                &req.ip6,
            )?),
            None if req.ip6.is_some() => {
                return Err(StoreError::Invalid(format!(
                    "Network {} has no IPv6 subnet",
                    network.name
                )))
            }
            None => None,
        };
        let mac = match &req.mac {
            Some(m) => ipam::format_mac(
                &ipam::parse_mac(m)
                    .ok_or_else(|| StoreError::Invalid(format!("{m:?} is not a unicast MAC address")))?,
            ),
            None => ipam::format_mac(&ipam::mac_from(ipam::random())),
        };
        let mut stmt = tx.prepare("SELECT ifname FROM attachments WHERE instance_id = ?1")?;
        let names: HashSet<String> = stmt
            .query_map([instance_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !names.contains(n))
            .unwrap_or_default();
        let seq: i64 = tx.query_row("SELECT coalesce(max(seq), 0) + 1 FROM attachments", [], |r| {
            r.get(0)
        })?;
        // Host link names are at most 15 bytes: v + 8 of the instance id + 6 of the network id.
        let short = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        let host_ifname = format!("v{}{}", short(instance_id, 8), short(&network.id, 6));
        let rec = AttachmentRecord {
            instance_id: instance_id.into(),
            network_id: network.id.clone(),
            seq,
            ifname,
            host_ifname,
            mac,
            ip4: ip4.and_then(|a| match a {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }),
            ip6: ip6.and_then(|a| match a {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            }),
            aliases: req.aliases.clone(),
        };
        let res = tx.execute(
            &format!("INSERT INTO attachments ({ATT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                rec.instance_id,
                rec.network_id,
                rec.seq,
                rec.ifname,
                rec.host_ifname,
                rec.mac,
                rec.ip4.map(|a| a.to_string()),
                rec.ip6.map(|a| a.to_string()),
                json(&rec.aliases)
            ],
        );
        match res {
            Ok(_) => {}
            Err(e) if unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "An address or MAC address asked for is already in use on network {}",
                    network.name
                )))
            }
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(StoreError::NotFound(instance_id.into()))
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit()?;
        Ok(rec)
    }

    fn detach(&self, instance_id: &str, network_id: &str) -> Result<AttachmentRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let rec = tx
            .query_row(
                &format!("SELECT {ATT_COLUMNS} FROM attachments WHERE instance_id = ?1 AND network_id = ?2"),
                params![instance_id, network_id],
                attachment_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound("The instance is not on that network".into()))?;
        tx.execute(
            "DELETE FROM attachments WHERE instance_id = ?1 AND network_id = ?2",
            params![instance_id, network_id],
        )?;
        tx.commit()?;
        Ok(rec)
    }

    fn attachments(&self) -> Result<Vec<AttachmentRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {ATT_COLUMNS} FROM attachments ORDER BY seq"))?;
        let rows = stmt.query_map([], attachment_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
