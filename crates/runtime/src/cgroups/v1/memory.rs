//! v1 `memory`: limit, memory+swap, soft limit, kernel memory, swappiness, OOM killer.
//!
//! As in the OCI spec, `swap` is the memory+swap total (memory.memsw.limit_in_bytes). The kernel insists on
//! memsw >= limit at every moment, so the two are written in the order that keeps it true: memsw first when it
//! grows past the current limit (or becomes unlimited), the limit first otherwise.

use std::path::Path;

use oci_spec::runtime::LinuxMemory;

use crate::cgroups::error::{CgroupError, ENOTSUPP};
use crate::cgroups::fs;
use crate::cgroups::stats::{MemoryEntry, Stats};

const LIMIT: &str = "memory.limit_in_bytes";
const MEMSW: &str = "memory.memsw.limit_in_bytes";

/// Whether the spec sets anything for the memory controller.
pub(crate) fn requested(m: &LinuxMemory) -> bool {
    m.limit().is_some_and(|v| v != 0)
        || m.reservation().is_some_and(|v| v != 0)
        || m.swap().is_some_and(|v| v != 0)
        || m.kernel().is_some_and(|v| v != 0)
        || m.kernel_tcp().is_some_and(|v| v != 0)
        || m.swappiness().is_some()
        || m.disable_oom_killer() == Some(true)
}

/// Normalises a limit: 0 means "not set", any negative value means "unlimited" (-1).
pub(crate) fn limit_value(v: Option<i64>) -> Option<i64> {
    v.filter(|&v| v != 0).map(|v| v.max(-1))
}

fn setting(name: &str) -> String {
    format!("linux.resources.memory.{name}")
}

/// Checks limit and memory+swap together; returns (limit, swap) with "memory unlimited, swap unset" meaning both
/// unlimited, as runc does.
pub(crate) fn limit_and_swap(m: &LinuxMemory) -> Result<(Option<i64>, Option<i64>), CgroupError> {
    let limit = limit_value(m.limit());
    let mut swap = limit_value(m.swap());
    if limit == Some(-1) && swap.is_none() {
        swap = Some(-1);
    }
    if let (Some(l), Some(s)) = (limit, swap) {
        if s != -1 && l == -1 {
            let reason = format!("a memory+swap limit ({s}) needs a memory limit, but memory is unlimited");
            return Err(CgroupError::InvalidResource {
                setting: setting("swap"),
                reason,
            });
        }
        if s != -1 && s < l {
            let reason = format!("the memory+swap limit ({s}) is lower than the memory limit ({l})");
            return Err(CgroupError::InvalidResource {
                setting: setting("swap"),
                reason,
            });
        }
    }
    Ok((limit, swap))
}

pub(crate) fn apply(dir: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    let (limit, mut swap) = limit_and_swap(m)?;
    if let Some(s) = swap {
        if !fs::has(dir, MEMSW) {
            if s != -1 {
                return Err(CgroupError::Unsupported {
                    setting: setting("swap"),
                    reason: format!(
                        "swap accounting is off on this host ({} does not exist; boot with swapaccount=1)",
                        dir.join(MEMSW).display()
                    ),
                });
            }
            swap = None;
        }
    }
    match (limit, swap) {
        (Some(l), Some(s)) => {
            let current = fs::read_u64(dir, LIMIT)?;
            if s == -1 || current < s as u64 {
                fs::write(dir, MEMSW, s)?;
                fs::write(dir, LIMIT, l)?;
            } else {
                fs::write(dir, LIMIT, l)?;
                fs::write(dir, MEMSW, s)?;
            }
        }
        (Some(l), None) => fs::write(dir, LIMIT, l)?,
        (None, Some(s)) => fs::write(dir, MEMSW, s)?,
        (None, None) => {}
    }

    if let Some(r) = limit_value(m.reservation()) {
        fs::write(dir, "memory.soft_limit_in_bytes", r)?;
    }
    // Kernel memory limits are deprecated: the files vanish or refuse writes (ENOTSUPP) on recent kernels, where
    // kernel memory is simply part of the memory limit. Neither is an error.
    for (value, file) in [
        (m.kernel(), "memory.kmem.limit_in_bytes"),
        (m.kernel_tcp(), "memory.kmem.tcp.limit_in_bytes"),
    ] {
        if let Some(v) = limit_value(value) {
            if fs::has(dir, file) {
                match fs::write_raw(dir, file, &v.to_string()) {
                    Ok(()) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(ENOTSUPP)) => {}
                    Err(e) => return Err(fs::write_error(dir, file, &v.to_string(), e)),
                }
            }
        }
    }
    if let Some(swappiness) = m.swappiness() {
        if swappiness > 100 {
            let reason = format!("{swappiness} is out of range (0 to 100)");
            return Err(CgroupError::InvalidResource {
                setting: setting("swappiness"),
                reason,
            });
        }
        fs::write(dir, "memory.swappiness", swappiness)?;
    }
    if let Some(disable) = m.disable_oom_killer() {
        fs::write(dir, "memory.oom_control", u8::from(disable))?;
    }
    if let Some(hierarchy) = m.use_hierarchy() {
        if fs::read_u64_or_zero(dir, "memory.use_hierarchy")? != u64::from(hierarchy) {
            fs::write(dir, "memory.use_hierarchy", u8::from(hierarchy))?;
        }
    }
    Ok(())
}

/// One usage/max/limit/failcnt group, e.g. prefix "memory.memsw." ; `None` when its usage file does not exist.
fn entry(dir: &Path, prefix: &str) -> Result<Option<MemoryEntry>, CgroupError> {
    if !fs::has(dir, &format!("{prefix}usage_in_bytes")) {
        return Ok(None);
    }
    Ok(Some(MemoryEntry {
        usage: fs::read_u64(dir, &format!("{prefix}usage_in_bytes"))?,
        max: fs::read_u64_or_zero(dir, &format!("{prefix}max_usage_in_bytes"))?,
        limit: fs::read_u64_or_zero(dir, &format!("{prefix}limit_in_bytes"))?,
        failcnt: fs::read_u64_or_zero(dir, &format!("{prefix}failcnt"))?,
    }))
}

pub(crate) fn stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    let mem = &mut stats.memory;
    mem.usage = entry(dir, "memory.")?.unwrap_or_default();
    mem.swap = entry(dir, "memory.memsw.")?.unwrap_or_default();
    mem.kernel = entry(dir, "memory.kmem.")?.unwrap_or_default();
    mem.kernel_tcp = entry(dir, "memory.kmem.tcp.")?.unwrap_or_default();
    if let Some(content) = fs::read_opt(dir, "memory.stat")? {
        mem.raw = fs::flat_keyed(&content)
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        mem.cache = mem.raw.get("cache").copied().unwrap_or(0);
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
    fn limit_and_swap_rules() {
        assert_eq!(
            limit_and_swap(&mem(Some(100), Some(200))).unwrap(),
            (Some(100), Some(200))
        );
        assert_eq!(
            limit_and_swap(&mem(Some(-1), None)).unwrap(),
            (Some(-1), Some(-1))
        );
        assert_eq!(
            limit_and_swap(&mem(Some(-5), Some(-1))).unwrap(),
            (Some(-1), Some(-1))
        );
        assert_eq!(limit_and_swap(&mem(Some(0), Some(0))).unwrap(), (None, None));
        assert_eq!(limit_and_swap(&mem(None, Some(300))).unwrap(), (None, Some(300)));
        let e = limit_and_swap(&mem(Some(200), Some(100)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lower than the memory limit"), "{e}");
        assert!(limit_and_swap(&mem(Some(-1), Some(100))).is_err());
    }
}
