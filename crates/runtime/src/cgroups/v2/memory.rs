//! v2 `memory`: memory.max, memory.swap.max, memory.low.
//!
//! OCI `swap` is memory+swap (the v1 meaning); v2 limits swap alone, so memory.swap.max = swap - limit. Kernel
//! memory limits, swappiness and the OOM-killer switch have no v2 counterpart and are not applied (as in runc and
//! crun): kernel memory is part of memory.max, and swappiness is global on v2.

use std::path::Path;

use oci_spec::runtime::LinuxMemory;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::stats::{MemoryEntry, Stats};
use crate::cgroups::v1::memory::{limit_and_swap, limit_value};

fn v2_value(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// The memory.swap.max value for a spec, `None` when swap is not set.
pub(crate) fn swap_max(m: &LinuxMemory) -> Result<Option<String>, CgroupError> {
    let (limit, swap) = limit_and_swap(m)?;
    match (limit, swap) {
        (_, None) => Ok(None),
        (_, Some(-1)) => Ok(Some("max".to_string())),
        (Some(l), Some(s)) if l > 0 => Ok(Some((s - l).to_string())),
        (_, Some(s)) => Err(CgroupError::InvalidResource {
            setting: "linux.resources.memory.swap".into(),
            reason: format!("a memory+swap limit ({s}) on cgroup v2 needs a memory limit to subtract"),
        }),
    }
}

pub(crate) fn apply(dir: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    if let Some(value) = swap_max(m)? {
        match fs::write_raw(dir, "memory.swap.max", &value) {
            Ok(()) => {}
            // Without swap accounting there is no file; "no limit" and "no swap" then hold anyway.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && (value == "max" || value == "0") => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CgroupError::Unsupported {
                    setting: "linux.resources.memory.swap".into(),
                    reason: format!(
                        "swap accounting is off on this host ({} does not exist)",
                        dir.join("memory.swap.max").display()
                    ),
                })
            }
            Err(e) => return Err(fs::write_error(dir, "memory.swap.max", &value, e)),
        }
    }
    if let Some(limit) = limit_value(m.limit()) {
        fs::write(dir, "memory.max", v2_value(limit))?;
    }
    if let Some(low) = limit_value(m.reservation()) {
        fs::write(dir, "memory.low", v2_value(low))?;
    }
    Ok(())
}

fn entry(dir: &Path, prefix: &str) -> Result<MemoryEntry, CgroupError> {
    Ok(MemoryEntry {
        usage: fs::read_u64_or_zero(dir, &format!("{prefix}.current"))?,
        max: fs::read_u64_or_zero(dir, &format!("{prefix}.peak"))?,
        limit: fs::read_u64_or_zero(dir, &format!("{prefix}.max"))?,
        failcnt: fs::read_keyed(dir, &format!("{prefix}.events"), "max")?,
    })
}

pub(crate) fn stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    let mem = &mut stats.memory;
    mem.usage = entry(dir, "memory")?;
    // v1 reports memory+swap; do the same for the same JSON.
    let mut swap = entry(dir, "memory.swap")?;
    swap.usage = swap.usage.saturating_add(mem.usage.usage);
    if swap.limit != u64::MAX {
        swap.limit = swap.limit.saturating_add(mem.usage.limit);
    }
    swap.max = 0;
    mem.swap = swap;
    if let Some(content) = fs::read_opt(dir, "memory.stat")? {
        mem.raw = fs::flat_keyed(&content)
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        mem.cache = mem.raw.get("file").copied().unwrap_or(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxMemoryBuilder;

    fn mem(limit: Option<i64>, swap: Option<i64>) -> LinuxMemory {
        let mut b = LinuxMemoryBuilder::default();
        if let Some(l) = limit {
            b = b.limit(l);
        }
        if let Some(s) = swap {
            b = b.swap(s);
        }
        b.build().unwrap()
    }

    #[test]
    fn swap_is_converted_to_swap_only() {
        assert_eq!(
            swap_max(&mem(Some(100), Some(300))).unwrap().as_deref(),
            Some("200")
        );
        assert_eq!(
            swap_max(&mem(Some(100), Some(100))).unwrap().as_deref(),
            Some("0")
        );
        assert_eq!(
            swap_max(&mem(Some(100), Some(-1))).unwrap().as_deref(),
            Some("max")
        );
        assert_eq!(swap_max(&mem(Some(-1), None)).unwrap().as_deref(), Some("max"));
        assert_eq!(swap_max(&mem(Some(100), None)).unwrap(), None);
        assert!(swap_max(&mem(None, Some(300))).is_err());
        assert!(swap_max(&mem(Some(300), Some(100))).is_err());
    }
}
