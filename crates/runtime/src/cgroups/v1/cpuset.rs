//! v1 `cpuset`: CPUs and memory nodes. A new v1 cpuset starts with empty cpus/mems and refuses tasks until they
//! are filled, so [`prepare`] copies them down from the parent at every level it touches.

use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::stats::Stats;

/// Whether the spec sets cpus or mems.
pub(crate) fn requested(cpu: &LinuxCpu) -> bool {
    cpu.cpus().as_deref().is_some_and(|s| !s.trim().is_empty())
        || cpu.mems().as_deref().is_some_and(|s| !s.trim().is_empty())
}

pub(crate) fn apply(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.trim().is_empty()) {
        fs::write(dir, "cpuset.cpus", cpus.trim())?;
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.trim().is_empty()) {
        fs::write(dir, "cpuset.mems", mems.trim())?;
    }
    Ok(())
}

/// Fills empty cpuset.cpus / cpuset.mems of `dir` and of its ancestors below `mount_point` from their parents.
pub(crate) fn prepare(mount_point: &Path, dir: &Path) -> Result<(), CgroupError> {
    let Ok(rel) = dir.strip_prefix(mount_point) else {
        return Ok(());
    };
    let mut parent = mount_point.to_path_buf();
    for component in rel.components() {
        let current = parent.join(component);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if fs::read(&current, file)?.trim().is_empty() {
                let value = fs::read(&parent, file)?;
                let value = value.trim();
                if !value.is_empty() {
                    fs::write(&current, file, value)?;
                }
            }
        }
        parent = current;
    }
    Ok(())
}

pub(crate) fn stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    let s = &mut stats.cpuset;
    s.cpus = read_list(dir, "cpuset.cpus")?;
    s.mems = read_list(dir, "cpuset.mems")?;
    s.cpu_exclusive = fs::read_u64_or_zero(dir, "cpuset.cpu_exclusive")?;
    s.mem_exclusive = fs::read_u64_or_zero(dir, "cpuset.mem_exclusive")?;
    s.mem_hardwall = fs::read_u64_or_zero(dir, "cpuset.mem_hardwall")?;
    s.memory_migrate = fs::read_u64_or_zero(dir, "cpuset.memory_migrate")?;
    s.memory_pressure = fs::read_u64_or_zero(dir, "cpuset.memory_pressure")?;
    s.memory_spread_page = fs::read_u64_or_zero(dir, "cpuset.memory_spread_page")?;
    s.memory_spread_slab = fs::read_u64_or_zero(dir, "cpuset.memory_spread_slab")?;
    s.sched_load_balance = fs::read_u64_or_zero(dir, "cpuset.sched_load_balance")?;
    if let Some(v) = fs::read_opt(dir, "cpuset.sched_relax_domain_level")? {
        s.sched_relax_domain_level = v.trim().parse().unwrap_or(0);
    }
    Ok(())
}

/// Reads a CPU / node list file ("0-3,8"), empty when the file does not exist.
pub(crate) fn read_list(dir: &Path, file: &str) -> Result<Vec<u16>, CgroupError> {
    match fs::read_opt(dir, file)? {
        None => Ok(Vec::new()),
        Some(c) => parse_list(&c).map_err(|detail| fs::parse_error(dir, file, detail)),
    }
}

/// Parses the kernel's list format: comma-separated numbers and inclusive ranges.
pub(crate) fn parse_list(s: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let num = |v: &str| {
            v.trim()
                .parse::<u16>()
                .map_err(|_| format!("'{v}' in '{}' is not a CPU or node number", s.trim()))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("range '{part}' is reversed"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_list("0-3,8,10-11\n").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_list("\n").unwrap(), Vec::<u16>::new());
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("a").is_err());
    }
}
