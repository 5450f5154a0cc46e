//! `update`: resources from `--resources FILE|-` and/or runc's single flags.

use std::io::Read;

use anyhow::{Context, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxPids, LinuxResources};
use vessel_runtime::container::{self, Runtime};

use crate::cli::UpdateArgs;

use vessel_runtime::units::parse_bytes;

pub fn update(rt: &Runtime, a: UpdateArgs) -> Result<()> {
    let mut res: LinuxResources = match a.resources.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("Cannot read resources from stdin")?;
            serde_json::from_str(&text).context("Malformed resources JSON on stdin")?
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("Cannot read {path}"))?;
            serde_json::from_str(&text).with_context(|| format!("Malformed resources JSON in {path}"))?
        }
        None => LinuxResources::default(),
    };
    if a.memory.is_some() || a.memory_swap.is_some() || a.memory_reservation.is_some() {
        let mut m = res.memory().unwrap_or_default();
        if let Some(v) = &a.memory {
            m.set_limit(Some(parse_bytes(v)?));
        }
        if let Some(v) = &a.memory_swap {
            m.set_swap(Some(parse_bytes(v)?));
        }
        if let Some(v) = &a.memory_reservation {
            m.set_reservation(Some(parse_bytes(v)?));
        }
        res.set_memory(Some(m));
    }
    let cpu_flags = a.cpu_shares.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_period.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some();
    if cpu_flags {
        let mut c: LinuxCpu = res.cpu().clone().unwrap_or_default();
        if let Some(v) = a.cpu_shares {
            c.set_shares(Some(v));
        }
        if let Some(v) = a.cpu_quota {
            c.set_quota(Some(v));
        }
        if let Some(v) = a.cpu_period {
            c.set_period(Some(v));
        }
        if let Some(v) = a.cpu_rt_period {
            c.set_realtime_period(Some(v));
        }
        if let Some(v) = a.cpu_rt_runtime {
            c.set_realtime_runtime(Some(v));
        }
        if let Some(v) = &a.cpuset_cpus {
            c.set_cpus(Some(v.clone()));
        }
        if let Some(v) = &a.cpuset_mems {
            c.set_mems(Some(v.clone()));
        }
        res.set_cpu(Some(c));
    }
    if let Some(limit) = a.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        res.set_pids(Some(p));
    }
    if let Some(w) = a.blkio_weight {
        let mut b: LinuxBlockIo = res.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        res.set_block_io(Some(b));
    }
    container::update(rt, &a.id, &res)?;
    Ok(())
}
