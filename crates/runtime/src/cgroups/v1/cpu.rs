//! v1 `cpu` (shares, CFS quota/period/burst, idle, realtime) and `cpuacct` (usage statistics).

use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::stats::Stats;

/// USER_HZ, the unit of cpuacct.stat (fixed at 100 on every Linux architecture's user ABI).
const USER_HZ: u64 = 100;

/// Whether the spec sets anything the cpu controller (not cpuset) handles.
pub(crate) fn requested(cpu: &LinuxCpu) -> bool {
    cpu.shares().is_some_and(|v| v != 0)
        || cpu.quota().is_some_and(|v| v != 0)
        || cpu.period().is_some_and(|v| v != 0)
        || cpu.burst().is_some()
        || cpu.idle().is_some()
        || cpu.realtime_runtime().is_some_and(|v| v != 0)
        || cpu.realtime_period().is_some_and(|v| v != 0)
}

/// Writes `value` to `file`; when the kernel answers EINVAL and `retry_later` holds, returns the value so that
/// it can be written again once the value it depends on has changed.
pub(crate) fn write_or_defer(
    dir: &Path,
    file: &str,
    value: String,
    retry_later: bool,
) -> Result<Option<String>, CgroupError> {
    match fs::write_raw(dir, file, &value) {
        Ok(()) => Ok(None),
        Err(e) if retry_later && e.raw_os_error() == Some(libc::EINVAL) => Ok(Some(value)),
        Err(e) => Err(fs::write_error(dir, file, &value, e)),
    }
}

pub(crate) fn apply(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = cpu.shares().filter(|&v| v != 0) {
        fs::write(dir, "cpu.shares", shares)?;
        let got = fs::read_u64(dir, "cpu.shares")?;
        if got != shares {
            return Err(CgroupError::InvalidResource {
                setting: "linux.resources.cpu.shares".into(),
                reason: format!("the kernel clamped {shares} to {got} (the allowed range is 2 to 262144)"),
            });
        }
    }

    // Period, burst and quota constrain each other (and the parent's quota): a period or burst the kernel
    // refuses before the quota changes is written again after it.
    let quota = cpu
        .quota()
        .filter(|&v| v != 0)
        .map(|q| if q < 0 { -1 } else { q });
    let mut later = Vec::new();
    if let Some(period) = cpu.period().filter(|&v| v != 0) {
        if let Some(v) = write_or_defer(dir, "cpu.cfs_period_us", period.to_string(), quota.is_some())? {
            later.push(("cpu.cfs_period_us", v));
        }
    }
    if let Some(burst) = cpu.burst() {
        if fs::has(dir, "cpu.cfs_burst_us") {
            if let Some(v) = write_or_defer(dir, "cpu.cfs_burst_us", burst.to_string(), quota.is_some())? {
                later.push(("cpu.cfs_burst_us", v));
            }
        }
    }
    if let Some(quota) = quota {
        fs::write(dir, "cpu.cfs_quota_us", quota)?;
        for (file, value) in later {
            fs::write(dir, file, value)?;
        }
    }

    if let Some(idle) = cpu.idle() {
        if fs::has(dir, "cpu.idle") {
            fs::write(dir, "cpu.idle", idle)?;
        }
    }

    // Realtime bandwidth exists only with CONFIG_RT_GROUP_SCHED; the period is written first, again after the
    // runtime if the kernel refused it before.
    let runtime = cpu.realtime_runtime().filter(|&v| v != 0);
    let mut rt_later = None;
    if let Some(period) = cpu.realtime_period().filter(|&v| v != 0) {
        if fs::has(dir, "cpu.rt_period_us") {
            rt_later = write_or_defer(dir, "cpu.rt_period_us", period.to_string(), runtime.is_some())?;
        }
    }
    if let Some(runtime) = runtime {
        if fs::has(dir, "cpu.rt_runtime_us") {
            fs::write(dir, "cpu.rt_runtime_us", runtime)?;
            if let Some(period) = rt_later {
                fs::write(dir, "cpu.rt_period_us", period)?;
            }
        }
    }
    Ok(())
}

/// Throttling statistics from the cpu controller's cpu.stat.
pub(crate) fn stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    let Some(content) = fs::read_opt(dir, "cpu.stat")? else {
        return Ok(());
    };
    let t = &mut stats.cpu.throttling;
    for (key, value) in fs::flat_keyed(&content) {
        match key {
            "nr_periods" => t.periods = value,
            "nr_throttled" => t.throttled_periods = value,
            "throttled_time" => t.throttled_time = value,
            _ => {}
        }
    }
    Ok(())
}

/// Usage statistics from cpuacct (nanoseconds).
pub(crate) fn acct_stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    let u = &mut stats.cpu.usage;
    u.total = fs::read_u64_or_zero(dir, "cpuacct.usage")?;
    u.percpu = read_list(dir, "cpuacct.usage_percpu")?;
    u.percpu_kernel = read_list(dir, "cpuacct.usage_percpu_sys")?;
    u.percpu_user = read_list(dir, "cpuacct.usage_percpu_user")?;
    if fs::has(dir, "cpuacct.usage_user") {
        u.user = fs::read_u64(dir, "cpuacct.usage_user")?;
        u.kernel = fs::read_u64(dir, "cpuacct.usage_sys")?;
    } else if let Some(content) = fs::read_opt(dir, "cpuacct.stat")? {
        for (key, ticks) in fs::flat_keyed(&content) {
            let ns = ticks.saturating_mul(1_000_000_000 / USER_HZ);
            match key {
                "user" => u.user = ns,
                "system" => u.kernel = ns,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Reads a whitespace-separated list of numbers; empty when the file does not exist.
fn read_list(dir: &Path, file: &str) -> Result<Vec<u64>, CgroupError> {
    let Some(content) = fs::read_opt(dir, file)? else {
        return Ok(Vec::new());
    };
    content
        .split_whitespace()
        .map(|v| {
            v.parse()
                .map_err(|_| fs::parse_error(dir, file, format!("'{v}' is not a number")))
        })
        .collect()
}
