//! The guest's resource use as its own kernel counts it: memory from /proc/meminfo, CPU time from
//! /proc/stat, processes from /proc.

use crate::proto::GuestStats;

fn meminfo_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Busy CPU time of all CPUs (user, nice, system, irq, softirq, steal), in nanoseconds.
fn cpu_busy_ns(stat: &str) -> u64 {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64;
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: u64 = [0usize, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum();
    busy * (1_000_000_000 / ticks)
}

pub fn read() -> GuestStats {
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let processes = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    GuestStats {
        memory_total: meminfo_kib(&mem, "MemTotal:") * 1024,
        memory_available: meminfo_kib(&mem, "MemAvailable:") * 1024,
        cpu_usage_ns: cpu_busy_ns(&stat),
        processes,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machines_stats_are_plausible() {
        let s = super::read();
        assert!(
            s.memory_total > 0 && s.memory_available <= s.memory_total,
            "{s:?}"
        );
        assert!(s.cpu_usage_ns > 0 && s.processes > 0, "{s:?}");
    }
}
