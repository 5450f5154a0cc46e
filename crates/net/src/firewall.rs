//! vessel's packet filtering and NAT: one nftables table (`inet vessel`) rebuilt whole, in one atomic
//! batch, from what the daemon's store holds; plus, in other software's chains that could drop vessel's
//! traffic (a FORWARD policy of drop as Docker leaves it, firewalld's tables), accept rules for vessel's
//! bridges only, inserted at their head and tagged so they can be found again. Nothing else of anyone's is
//! flushed, reordered or changed.
//!
//! The table:
//! - `prerouting` / `output` (nat): traffic to a local address jumps to `forwards`, the port forwards'
//!   DNAT rules, so a forward works from outside, from the host itself (localhost too) and from instances.
//! - `postrouting` (nat): masquerade for egress of non-internal networks; for hairpin (an instance reaching
//!   a forward of its own network) and for localhost clients (127.0.0.0/8 cannot leave the host).
//! - `forward` (filter): forwarded connections and replies pass; nothing else enters a network from
//!   another link (isolation between networks, and no unsolicited access from outside); an internal
//!   network does not leave its bridge.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{json, Value};

use crate::nft;
use crate::NetError;

/// The comment on one table's rules in other software's chains (each daemon has its own table).
pub fn coexist_tag(table: &str) -> String {
    format!("{table}: accept traffic of its bridges")
}

#[derive(Debug, Clone, PartialEq)]
pub struct FirewallNetwork {
    pub bridge: String,
    pub subnet4: Option<Ipv4Net>,
    pub subnet6: Option<Ipv6Net>,
    pub internal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A port forward: `host_ports` on `host_ip` (every local address when `None`) to `target_ports` of an
/// instance. Ranges are inclusive and of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub proto: Proto,
    pub host_ip: Option<IpAddr>,
    pub host_ports: (u16, u16),
    pub target4: Option<Ipv4Addr>,
    pub target6: Option<Ipv6Addr>,
    pub target_ports: (u16, u16),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Firewall {
    /// The table's name (in family inet): one per daemon.
    pub table: String,
    pub networks: Vec<FirewallNetwork>,
    pub forwards: Vec<Forward>,
}

fn eq(left: Value, right: Value) -> Value {
    json!({ "match": { "op": "==", "left": left, "right": right } })
}

fn ne(left: Value, right: Value) -> Value {
    json!({ "match": { "op": "!=", "left": left, "right": right } })
}

fn meta(key: &str) -> Value {
    json!({ "meta": { "key": key } })
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({ "payload": { "protocol": protocol, "field": field } })
}

fn prefix(addr: impl ToString, len: u8) -> Value {
    json!({ "prefix": { "addr": addr.to_string(), "len": len } })
}

fn ports(p: (u16, u16)) -> Value {
    if p.0 == p.1 {
        json!(p.0)
    } else {
        json!({ "range": [p.0, p.1] })
    }
}

fn rule(table: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({ "add": { "rule": { "family": "inet", "table": table, "chain": chain, "expr": expr } } })
}

fn base_chain(table: &str, name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({ "add": { "chain": { "family": "inet", "table": table, "name": name, "type": kind,
        "hook": hook, "prio": prio, "policy": "accept" } } })
}

/// The commands that make the table anew (the first two make sure there is one to delete).
pub fn table_commands(fw: &Firewall) -> Vec<Value> {
    let t = fw.table.as_str();
    let rule = |chain: &str, expr: Vec<Value>| rule(t, chain, expr);
    let table = json!({ "table": { "family": "inet", "name": t } });
    let mut c = vec![
        json!({ "add": table.clone() }),
        json!({ "delete": table.clone() }),
    ];
    if fw.networks.is_empty() && fw.forwards.is_empty() {
        return c;
    }
    c.push(json!({ "add": table }));
    c.push(base_chain(t, "prerouting", "nat", "prerouting", -100));
    c.push(base_chain(t, "output", "nat", "output", -100));
    c.push(base_chain(t, "postrouting", "nat", "postrouting", 100));
    c.push(base_chain(t, "forward", "filter", "forward", 0));
    c.push(json!({ "add": { "chain": { "family": "inet", "table": t, "name": "forwards" } } }));
    let local = eq(
        json!({ "fib": { "result": "type", "flags": ["daddr"] } }),
        json!("local"),
    );
    for chain in ["prerouting", "output"] {
        c.push(rule(
            chain,
            vec![local.clone(), json!({ "jump": { "target": "forwards" } })],
        ));
    }
    for f in &fw.forwards {
        c.extend(forward_rules(t, f));
    }
    let ct_status_dnat =
        json!({ "match": { "op": "in", "left": { "ct": { "key": "status" } }, "right": "dnat" } });
    let ct_established = json!({ "match": { "op": "in", "left": { "ct": { "key": "state" } },
        "right": ["established", "related"] } });
    c.push(rule(
        "forward",
        vec![ct_status_dnat.clone(), json!({ "accept": null })],
    ));
    c.push(rule("forward", vec![ct_established, json!({ "accept": null })]));
    for n in &fw.networks {
        let br = json!(n.bridge);
        // Nothing enters the network from another link unless it is a forward (accepted above).
        c.push(rule(
            "forward",
            vec![
                eq(meta("oifname"), br.clone()),
                ne(meta("iifname"), br.clone()),
                json!({ "drop": null }),
            ],
        ));
        if n.internal {
            c.push(rule(
                "forward",
                vec![
                    eq(meta("iifname"), br.clone()),
                    ne(meta("oifname"), br.clone()),
                    json!({ "drop": null }),
                ],
            ));
            continue;
        }
        if let Some(s) = n.subnet4 {
            let from = eq(payload("ip", "saddr"), prefix(s.network(), s.prefix_len()));
            c.push(rule(
                "postrouting",
                vec![
                    from.clone(),
                    ne(meta("oifname"), br.clone()),
                    json!({ "masquerade": null }),
                ],
            ));
            c.push(rule(
                "postrouting",
                vec![
                    from,
                    eq(meta("oifname"), br.clone()),
                    ct_status_dnat.clone(),
                    json!({ "masquerade": null }),
                ],
            ));
            c.push(rule(
                "postrouting",
                vec![
                    eq(payload("ip", "saddr"), prefix(Ipv4Addr::LOCALHOST, 8)),
                    eq(meta("oifname"), br.clone()),
                    json!({ "masquerade": null }),
                ],
            ));
        }
        if let Some(s) = n.subnet6 {
            let from = eq(payload("ip6", "saddr"), prefix(s.network(), s.prefix_len()));
            c.push(rule(
                "postrouting",
                vec![
                    from.clone(),
                    ne(meta("oifname"), br.clone()),
                    json!({ "masquerade": null }),
                ],
            ));
            c.push(rule(
                "postrouting",
                vec![
                    from,
                    eq(meta("oifname"), br),
                    ct_status_dnat.clone(),
                    json!({ "masquerade": null }),
                ],
            ));
        }
    }
    c
}

/// DNAT rules of one forward: one rule per family the target has (a range to an equal range at the same
/// ports is one rule; shifted ports need one rule per port, as nftables maps no port offsets).
fn forward_rules(table: &str, f: &Forward) -> Vec<Value> {
    let mut out = Vec::new();
    let l4 = eq(meta("l4proto"), json!(f.proto.name()));
    let same = f.host_ports == f.target_ports;
    let pairs: Vec<((u16, u16), Option<u16>)> = if same {
        vec![(f.host_ports, None)]
    } else {
        (f.host_ports.0..=f.host_ports.1)
            .zip(f.target_ports.0..=f.target_ports.1)
            .map(|(h, t)| ((h, h), Some(t)))
            .collect()
    };
    let families: [(&str, &str, Option<IpAddr>); 2] = [
        ("ipv4", "ip", f.target4.map(IpAddr::V4)),
        ("ipv6", "ip6", f.target6.map(IpAddr::V6)),
    ];
    for (nfproto, family, target) in families {
        let Some(target) = target else { continue };
        let host_match = match f.host_ip {
            Some(h) if h.is_ipv4() != (family == "ip") => continue,
            Some(h) => Some(eq(payload(family, "daddr"), json!(h.to_string()))),
            None => None,
        };
        for (host, to_port) in &pairs {
            let mut expr = vec![eq(meta("nfproto"), json!(nfproto))];
            expr.extend(host_match.clone());
            expr.push(l4.clone());
            expr.push(eq(
                json!({ "payload": { "protocol": "th", "field": "dport" } }),
                ports(*host),
            ));
            let mut dnat = json!({ "family": family, "addr": target.to_string() });
            if let Some(p) = to_port {
                dnat["port"] = json!(p);
            }
            expr.push(json!({ "dnat": dnat }));
            out.push(rule(table, "forwards", expr));
        }
    }
    out
}

/// A base chain of someone else's at a hook where vessel's traffic passes.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignChain {
    pub family: String,
    pub table: String,
    pub name: String,
    pub hook: String,
}

/// Base chains on the forward and input hooks outside vessel's table, and the handles of vessel's rules
/// in them, from a ruleset listing.
pub fn foreign_chains(table: &str, ruleset: &Value) -> (Vec<ForeignChain>, Vec<(ForeignChain, u64)>) {
    let tag = coexist_tag(table);
    let items = ruleset["nftables"].as_array().cloned().unwrap_or_default();
    let mut chains = Vec::new();
    for i in &items {
        let ch = &i["chain"];
        let (Some(family), Some(table), Some(name), Some(hook)) = (
            ch["family"].as_str(),
            ch["table"].as_str(),
            ch["name"].as_str(),
            ch["hook"].as_str(),
        ) else {
            continue;
        };
        let ours = family == "inet" && table.starts_with("vessel");
        if !ours && matches!(family, "ip" | "ip6" | "inet") && matches!(hook, "forward" | "input") {
            chains.push(ForeignChain {
                family: family.into(),
                table: table.into(),
                name: name.into(),
                hook: hook.into(),
            });
        }
    }
    let mut tagged = Vec::new();
    for i in &items {
        let r = &i["rule"];
        if r["comment"].as_str() != Some(tag.as_str()) {
            continue;
        }
        let found = chains.iter().find(|c| {
            r["family"].as_str() == Some(c.family.as_str())
                && r["table"].as_str() == Some(c.table.as_str())
                && r["chain"].as_str() == Some(c.name.as_str())
        });
        if let (Some(c), Some(h)) = (found, r["handle"].as_u64()) {
            tagged.push((c.clone(), h));
        }
    }
    (chains, tagged)
}

/// Vessel's rules in other chains: the old ones removed, new ones inserted at their heads (for the
/// bridges of `fw`; none when it has no networks).
pub fn coexist_commands(
    fw: &Firewall,
    chains: &[ForeignChain],
    tagged: &[(ForeignChain, u64)],
) -> Vec<Value> {
    let mut c: Vec<Value> = tagged
        .iter()
        .map(|(ch, h)| {
            json!({ "delete": { "rule": { "family": ch.family, "table": ch.table, "chain": ch.name, "handle": h } } })
        })
        .collect();
    if fw.networks.is_empty() {
        return c;
    }
    let tag = coexist_tag(&fw.table);
    let bridges = json!({ "set": fw.networks.iter().map(|n| n.bridge.clone()).collect::<Vec<_>>() });
    for ch in chains {
        let insert = |expr: Vec<Value>| {
            json!({ "insert": { "rule": { "family": ch.family, "table": ch.table, "chain": ch.name,
                "expr": expr, "comment": tag } } })
        };
        if ch.hook == "forward" {
            c.push(insert(vec![
                eq(meta("iifname"), bridges.clone()),
                json!({ "accept": null }),
            ]));
            c.push(insert(vec![
                eq(meta("oifname"), bridges.clone()),
                json!({ "accept": null }),
            ]));
        } else {
            // Input: only what instances need of the host itself, their DNS resolver on the gateway.
            for proto in ["udp", "tcp"] {
                c.push(insert(vec![
                    eq(meta("iifname"), bridges.clone()),
                    eq(meta("l4proto"), json!(proto)),
                    eq(
                        json!({ "payload": { "protocol": "th", "field": "dport" } }),
                        json!(53),
                    ),
                    json!({ "accept": null }),
                ]));
            }
        }
    }
    c
}

/// Makes the calling thread's namespace hold exactly `fw`: vessel's table rebuilt and its rules in other
/// chains refreshed, all in one transaction.
pub fn apply(fw: &Firewall) -> Result<(), NetError> {
    let ruleset = match nft::list_ruleset() {
        // Without libnftables nothing of ours can be there to remove; only a table to make needs it.
        Err(NetError::Nftables(e))
            if e.starts_with("Cannot load") && fw.networks.is_empty() && fw.forwards.is_empty() =>
        {
            return Ok(())
        }
        r => r?,
    };
    let (chains, tagged) = foreign_chains(&fw.table, &ruleset);
    let mut commands = coexist_commands(fw, &chains, &tagged);
    commands.extend(table_commands(fw));
    nft::run(&json!({ "nftables": commands })).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw() -> Firewall {
        Firewall {
            table: "vessel".into(),
            networks: vec![
                FirewallNetwork {
                    bridge: "vessel0".into(),
                    subnet4: Some("10.77.0.0/24".parse().unwrap()),
                    subnet6: Some("fd00:1::/64".parse().unwrap()),
                    internal: false,
                },
                FirewallNetwork {
                    bridge: "vessel-inside".into(),
                    subnet4: Some("10.77.1.0/24".parse().unwrap()),
                    subnet6: None,
                    internal: true,
                },
            ],
            forwards: vec![Forward {
                proto: Proto::Tcp,
                host_ip: None,
                host_ports: (8080, 8081),
                target4: Some("10.77.0.2".parse().unwrap()),
                target6: Some("fd00:1::2".parse().unwrap()),
                target_ports: (80, 81),
            }],
        }
    }

    #[test]
    fn no_networks_means_no_table() {
        let c = table_commands(&Firewall {
            table: "vessel".into(),
            ..Default::default()
        });
        assert_eq!(c.len(), 2);
        assert!(c[1]["delete"]["table"].is_object());
    }

    #[test]
    fn internal_networks_get_no_masquerade_and_cannot_leave() {
        let text = serde_json::to_string(&table_commands(&fw())).unwrap();
        assert!(text.contains("10.77.0.0"));
        // Internal network: two drops and no masquerade for its subnet.
        assert!(!text.contains("\"10.77.1.0\""));
        assert_eq!(text.matches("vessel-inside").count(), 4);
    }

    #[test]
    fn shifted_port_ranges_become_one_rule_per_port_and_family() {
        let rules = forward_rules("vessel", &fw().forwards[0]);
        assert_eq!(rules.len(), 4);
        let text = serde_json::to_string(&rules).unwrap();
        assert!(text.contains("\"port\":80") && text.contains("\"port\":81"));
        let same = Forward {
            host_ports: (80, 81),
            target_ports: (80, 81),
            target6: None,
            ..fw().forwards[0].clone()
        };
        let rules = forward_rules("vessel", &same);
        assert_eq!(rules.len(), 1);
        assert!(serde_json::to_string(&rules).unwrap().contains("range"));
        let v6_host = Forward {
            host_ip: Some("::1".parse().unwrap()),
            ..same
        };
        assert!(
            forward_rules("vessel", &v6_host).is_empty(),
            "no v6 target: nothing for a v6 host address"
        );
    }

    #[test]
    fn foreign_chains_are_found_and_old_tags_replaced() {
        let listing = json!({ "nftables": [
            { "metainfo": {} },
            { "chain": { "family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "drop" } },
            { "chain": { "family": "inet", "table": "vessel", "name": "forward", "hook": "forward" } },
            { "chain": { "family": "inet", "table": "firewalld", "name": "filter_INPUT", "hook": "input" } },
            { "chain": { "family": "ip", "table": "nat", "name": "POSTROUTING", "hook": "postrouting" } },
            { "rule": { "family": "ip", "table": "filter", "chain": "FORWARD", "handle": 7, "comment": coexist_tag("vessel") } },
            { "rule": { "family": "ip", "table": "filter", "chain": "FORWARD", "handle": 8, "comment": "docker" } },
        ]});
        let (chains, tagged) = foreign_chains("vessel", &listing);
        assert_eq!(chains.len(), 2);
        assert_eq!(tagged.len(), 1);
        assert_eq!(tagged[0].1, 7);
        let c = coexist_commands(&fw(), &chains, &tagged);
        assert_eq!(c.len(), 1 + 2 + 2);
        assert_eq!(c[0]["delete"]["rule"]["handle"], 7);
        let c = coexist_commands(
            &Firewall {
                table: "vessel".into(),
                ..Default::default()
            },
            &chains,
            &tagged,
        );
        assert_eq!(c.len(), 1, "no networks: only the old rule goes");
    }
}
