//! `vessel network ...`, `vessel port`, and the network flags of `run` / `create`.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use hyper::Method;
use serde_json::json;
use vessel_api::{ConnectRequest, DisconnectRequest, Instance, Network, NetworkConfig, NetworkRequest};

use crate::cli::{CreateArgs, Global, NetworkCommand, NetworkCreateArgs};
use crate::client::{encode, Client, NO_BODY};
use crate::output::{emit, out, table};

/// `--network`, `--ip`, `--ip6`, `--mac-address`, `--network-alias` as the API takes them: a mode, or the
/// networks (the static settings apply to the first).
pub fn requests(a: &CreateArgs) -> Result<(Option<String>, Vec<NetworkRequest>)> {
    let names: Vec<String> = a
        .network
        .as_deref()
        .map(|n| {
            n.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let statics = a.ip.is_some() || a.ip6.is_some() || a.mac_address.is_some();
    if let [m] = names.as_slice() {
        if m == "none" || m == "host" {
            if statics || !a.network_alias.is_empty() {
                return Err(anyhow!(
                    "--ip, --ip6, --mac-address and --network-alias need a network, not {m}"
                ));
            }
            return Ok((Some(m.clone()), Vec::new()));
        }
    }
    if names.iter().any(|n| n == "none" || n == "host") {
        return Err(anyhow!(
            "--network none and host cannot be combined with other networks"
        ));
    }
    if names.is_empty() && !statics && a.network_alias.is_empty() {
        return Ok((None, Vec::new()));
    }
    let names = if names.is_empty() {
        vec!["vessel0".to_string()]
    } else {
        names
    };
    let reqs = names
        .into_iter()
        .enumerate()
        .map(|(i, network)| NetworkRequest {
            network,
            ip: if i == 0 { a.ip.clone() } else { None },
            ip6: if i == 0 { a.ip6.clone() } else { None },
            mac: if i == 0 { a.mac_address.clone() } else { None },
            aliases: a.network_alias.clone(),
        })
        .collect();
    Ok((None, reqs))
}

fn labels(list: &[String]) -> Result<BTreeMap<String, String>> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(anyhow!("Invalid --label {l:?}: use KEY=VALUE")),
        })
        .collect()
}

fn create(g: &Global, c: &Client, a: &NetworkCreateArgs) -> Result<()> {
    let cfg = NetworkConfig {
        name: a.name.clone(),
        driver: a.driver.clone(),
        subnet: a.subnet.clone(),
        gateway: a.gateway.clone(),
        ipv6: a.ipv6,
        subnet6: a.subnet6.clone(),
        gateway6: a.gateway6.clone(),
        internal: a.internal,
        mtu: a.mtu,
        parent: a.parent.clone(),
        vlan: a.vlan,
        labels: labels(&a.label)?,
    };
    let n: Network = c.call(Method::POST, "/1.0/networks", Some(&cfg))?;
    emit(g, &n.id, serde_json::to_value(&n)?);
    Ok(())
}

fn list(g: &Global, c: &Client) -> Result<()> {
    let nets: Vec<Network> = c.call(Method::GET, "/1.0/networks", NO_BODY)?;
    if g.format == "json" {
        out(serde_json::to_string_pretty(&nets)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nets
        .iter()
        .map(|n| {
            vec![
                n.id.chars().take(12).collect(),
                n.name.clone(),
                n.driver.clone(),
                [n.subnet.clone(), n.subnet6.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(","),
                if n.internal {
                    "internal".into()
                } else {
                    String::new()
                },
                n.instances.len().to_string(),
            ]
        })
        .collect();
    table(
        &["NETWORK ID", "NAME", "DRIVER", "SUBNETS", "FLAGS", "INSTANCES"],
        &rows,
    );
    Ok(())
}

fn path(name: &str, rest: &str) -> String {
    format!("/1.0/networks/{}{rest}", encode(name))
}

/// `vessel network ...`; the exit code.
pub fn command(g: &Global, c: &Client, cmd: &NetworkCommand) -> Result<u8> {
    match cmd {
        NetworkCommand::Create(a) => create(g, c, a)?,
        NetworkCommand::Ls => list(g, c)?,
        NetworkCommand::Inspect { networks } => {
            let mut all = Vec::new();
            for n in networks {
                let net: Network = c.call(Method::GET, &path(n, ""), NO_BODY)?;
                all.push(net);
            }
            out(serde_json::to_string_pretty(&all)?);
        }
        NetworkCommand::Rm { networks } => {
            let mut failed = 0u8;
            for n in networks {
                match c.call::<serde_json::Value>(Method::DELETE, &path(n, ""), NO_BODY) {
                    Ok(_) => out(n),
                    Err(e) => {
                        eprintln!("vessel: {}", vessel_runtime::logging::one_line(e.as_ref()));
                        failed = 1;
                    }
                }
            }
            return Ok(failed);
        }
        NetworkCommand::Connect {
            network,
            instance,
            ip,
            ip6,
            mac_address,
            alias,
        } => {
            let req = ConnectRequest {
                instance: instance.clone(),
                ip: ip.clone(),
                ip6: ip6.clone(),
                mac: mac_address.clone(),
                aliases: alias.clone(),
            };
            let _: Instance = c.call(Method::POST, &path(network, "/connect"), Some(&req))?;
        }
        NetworkCommand::Disconnect { network, instance } => {
            let req = DisconnectRequest {
                instance: instance.clone(),
            };
            let _: Instance = c.call(Method::POST, &path(network, "/disconnect"), Some(&req))?;
        }
    }
    Ok(0)
}

/// `vessel port INSTANCE`: its forwards, docker's way (`80/tcp -> 0.0.0.0:8080`).
pub fn port(g: &Global, c: &Client, instance: &str) -> Result<u8> {
    let inst: Instance = c.call(
        Method::GET,
        &format!("/1.0/instances/{}", encode(instance)),
        NO_BODY,
    )?;
    let lines: Vec<String> = inst
        .config
        .ports
        .iter()
        .flat_map(|p| {
            let (h0, _) = p.host_range();
            let (p0, p1) = p.range();
            let host = p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into());
            (p0..=p1).map(move |port| format!("{port}/{} -> {host}:{}", p.proto, h0 + (port - p0)))
        })
        .collect();
    emit(g, lines.join("\n"), json!(inst.config.ports));
    Ok(0)
}
