//! Resource use: `stats` samples of an instance's cgroup, `top` of its processes.

use std::time::{Duration, Instant};

use vessel_api::{Stats, Status, Top};

use super::{Manager, ManagerError};

/// A raw sample and when it was taken (CPU % needs two).
#[derive(Debug, Clone)]
pub struct Sample {
    pub stats: Stats,
    pub at: Instant,
}

impl Manager {
    /// One sample of a running instance's cgroup.
    pub fn sample(&self, name_or_id: &str) -> Result<Sample, ManagerError> {
        let r = self.find(name_or_id)?;
        if !r.instance.state.status.is_active() {
            return Err(ManagerError::Conflict(format!(
                "Instance {} is {}: it has no statistics",
                r.instance.name, r.instance.state.status
            )));
        }
        if super::vm::is_vm(&r.instance) {
            return self.sample_vm(&r.instance);
        }
        let raw = vessel_runtime::container::stats(&self.runtime(), &r.instance.id)
            .map_err(|e| ManagerError::Conflict(vessel_runtime::logging::one_line(&e)))?;
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let blk = |op: &str| -> u64 {
            raw["blkio"]["ioServiceBytesRecursive"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|e| e["op"].as_str().is_some_and(|o| o.eq_ignore_ascii_case(op)))
                        .map(|e| n(&e["value"]))
                        .sum()
                })
                .unwrap_or(0)
        };
        let host_mem = host_memory();
        let limit = n(&raw["memory"]["usage"]["limit"]);
        let (net_rx, net_tx) = net_bytes(r.instance.state.pid);
        Ok(Sample {
            stats: Stats {
                id: r.instance.id.clone(),
                name: r.instance.name.clone(),
                time: vessel_runtime::clock::now_rfc3339(),
                cpu_usage_ns: n(&raw["cpu"]["usage"]["total"]),
                cpu_percent: 0.0,
                memory_usage: n(&raw["memory"]["usage"]["usage"]),
                memory_limit: if limit == 0 || limit > host_mem {
                    host_mem
                } else {
                    limit
                },
                pids: n(&raw["pids"]["current"]),
                pids_limit: Some(n(&raw["pids"]["limit"])).filter(|l| *l > 0),
                block_read: blk("read"),
                block_write: blk("write"),
                net_rx,
                net_tx,
            },
            at: Instant::now(),
        })
    }

    /// A VM's sample: its VMM process on the host (guest RAM it touched, vCPU time) and its taps.
    fn sample_vm(&self, inst: &vessel_api::Instance) -> Result<Sample, ManagerError> {
        let pid = inst.state.pid.unwrap_or(0);
        let taps: Vec<String> = self
            .attachments_of(&inst.id)?
            .into_iter()
            .map(|a| a.host_ifname)
            .collect();
        let u = super::vm::vm_usage(pid, &taps);
        let memory_limit = inst.config.limits.memory.map_or(256 << 20, |m| m as u64);
        Ok(Sample {
            stats: Stats {
                id: inst.id.clone(),
                name: inst.name.clone(),
                time: vessel_runtime::clock::now_rfc3339(),
                cpu_usage_ns: u.cpu_ns,
                cpu_percent: 0.0,
                memory_usage: u.memory,
                memory_limit,
                pids: 1,
                pids_limit: None,
                block_read: u.block_read,
                block_write: u.block_write,
                net_rx: u.net_rx,
                net_tx: u.net_tx,
            },
            at: Instant::now(),
        })
    }

    /// A sample with its CPU % against `prev` (or against a fresh one 100 ms before).
    pub fn stats(&self, name_or_id: &str, prev: Option<&Sample>) -> Result<Sample, ManagerError> {
        let first = match prev {
            Some(p) => p.clone(),
            None => {
                let s = self.sample(name_or_id)?;
                std::thread::sleep(Duration::from_millis(100));
                s
            }
        };
        let mut now = self.sample(name_or_id)?;
        let wall = now.at.duration_since(first.at).as_nanos() as f64;
        let used = now.stats.cpu_usage_ns.saturating_sub(first.stats.cpu_usage_ns) as f64;
        now.stats.cpu_percent = if wall > 0.0 { used / wall * 100.0 } else { 0.0 };
        Ok(now)
    }

    pub fn top(&self, name_or_id: &str) -> Result<Top, ManagerError> {
        let r = self.find(name_or_id)?;
        if !matches!(r.instance.state.status, Status::Running | Status::Paused) {
            return Err(ManagerError::Conflict(format!(
                "Instance {} is {}: it has no processes",
                r.instance.name, r.instance.state.status
            )));
        }
        // A VM's processes on the host are its VMM; those inside need the guest agent.
        let pids = if super::vm::is_vm(&r.instance) {
            r.instance.state.pid.into_iter().collect()
        } else {
            vessel_runtime::container::ps_pids(&self.runtime(), &r.instance.id)
                .map_err(|e| ManagerError::Conflict(vessel_runtime::logging::one_line(&e)))?
        };
        let processes = pids
            .into_iter()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // Fields after the command (which may hold spaces) start after the last ')'.
                let after = stat.rsplit_once(") ")?.1;
                let f: Vec<&str> = after.split(' ').collect();
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let uid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next())
                    .unwrap_or("?")
                    .to_string();
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmdline)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                Some(vec![
                    uid,
                    pid.to_string(),
                    f.get(1).unwrap_or(&"?").to_string(),
                    f.first().unwrap_or(&"?").to_string(),
                    cmd,
                ])
            })
            .collect();
        Ok(Top {
            titles: ["UID", "PID", "PPID", "STAT", "CMD"].map(String::from).to_vec(),
            processes,
        })
    }
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Bytes received and sent on every interface but loopback in the process's network namespace.
fn net_bytes(pid: Option<i32>) -> (u64, u64) {
    pid.map_or((0, 0), |pid| net_dev(pid, |name| name != "lo"))
}

/// Bytes received and sent on the interfaces `keep` picks in the process's network namespace.
pub(super) fn net_dev(pid: i32, keep: impl Fn(&str) -> bool) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if !keep(name.trim()) {
                return None;
            }
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            Some((*f.first()?, *f.get(8)?))
        })
        .fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
}
