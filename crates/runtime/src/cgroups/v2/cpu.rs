//! v2 `cpu` (cpu.weight, cpu.max, cpu.max.burst, cpu.idle) and `cpuset` (cpuset.cpus, cpuset.mems).
//!
//! OCI speaks v1 "shares" (2..262144, default 1024); v2 has "weight" (1..10000, default 100). The conversion is
//! the quadratic-in-log-space curve current runc and crun use, which maps minimum, default and maximum onto each
//! other (the older linear formula turned the default 1024 into 39).

use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::stats::Stats;
use crate::cgroups::v1::cpu::write_or_defer;
use crate::cgroups::v1::cpuset::read_list;

const SHARES_MIN: u64 = 2;
const SHARES_MAX: u64 = 262_144;
const WEIGHT_MAX: u64 = 10_000;

/// log10 of the (unrounded) weight for `shares`.
fn weight_exponent(shares: u64) -> f64 {
    let l = (shares as f64).log2();
    (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0
}

/// Converts v1 cpu shares to a v2 cpu.weight; 0 stays 0 ("not set").
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        s if s <= SHARES_MIN => 1,
        s if s >= SHARES_MAX => WEIGHT_MAX,
        s => {
            let w = 10f64.powf(weight_exponent(s));
            // Whole results (1024 -> 100) must not be pushed up by the last bit of floating-point error.
            let nearest = w.round();
            if (w - nearest).abs() < 1e-9 * nearest.max(1.0) {
                nearest as u64
            } else {
                w.ceil() as u64
            }
        }
    }
}

/// Converts a v2 cpu.weight back to v1 shares: the share count nearest the exact inverse of the curve that
/// converts to `weight` again (100 -> 1024); 0 stays 0.
pub fn weight_to_shares(weight: u64) -> u64 {
    match weight {
        0 => 0,
        1 => SHARES_MIN,
        w if w >= WEIGHT_MAX => SHARES_MAX,
        w => {
            let e = (w as f64).log10() + 7.0 / 34.0;
            let l = (-125.0 + (125.0f64 * 125.0 + 4.0 * 612.0 * e).sqrt()) / 2.0;
            let mut s = (2f64.powf(l).round() as u64).clamp(SHARES_MIN, SHARES_MAX);
            while s > SHARES_MIN && shares_to_weight(s) > w {
                s -= 1;
            }
            while s < SHARES_MAX && shares_to_weight(s) < w {
                s += 1;
            }
            s
        }
    }
}

pub(crate) fn apply(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(idle) = cpu.idle() {
        if fs::has(dir, "cpu.idle") {
            fs::write(dir, "cpu.idle", idle)?;
        }
    }
    // An idle cgroup has no weight: the kernel refuses cpu.weight there.
    let idle = cpu.idle().is_some_and(|i| i != 0);
    if let Some(shares) = cpu.shares().filter(|&s| s != 0 && !idle) {
        fs::write(dir, "cpu.weight", shares_to_weight(shares))?;
    }
    let quota = cpu.quota().filter(|&q| q != 0);
    let period = cpu.period().filter(|&p| p != 0);
    let mut burst_later = None;
    if let Some(burst) = cpu.burst() {
        if fs::has(dir, "cpu.max.burst") {
            burst_later = write_or_defer(dir, "cpu.max.burst", burst.to_string(), quota.is_some())?;
        }
    }
    if quota.is_some() || period.is_some() {
        // cpu.max holds "$QUOTA $PERIOD"; keep the half the spec does not set.
        let current = fs::read(dir, "cpu.max")?;
        let mut fields = current.split_whitespace();
        let cur_quota = fields.next().unwrap_or("max").to_string();
        let cur_period = fields.next().unwrap_or("100000").to_string();
        let quota = match quota {
            Some(q) if q > 0 => q.to_string(),
            Some(_) => "max".to_string(),
            None => cur_quota,
        };
        let period = period.map_or(cur_period, |p| p.to_string());
        fs::write(dir, "cpu.max", format!("{quota} {period}"))?;
        if let Some(burst) = burst_later {
            fs::write(dir, "cpu.max.burst", burst)?;
        }
    }
    // Realtime bandwidth has no cgroup v2 interface: there is no file to write.
    Ok(())
}

pub(crate) fn apply_cpuset(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.trim().is_empty()) {
        fs::write(dir, "cpuset.cpus", cpus.trim())?;
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.trim().is_empty()) {
        fs::write(dir, "cpuset.mems", mems.trim())?;
    }
    Ok(())
}

/// Statistics from cpu.stat. The usage keys exist in every v2 cgroup; `usage` says whether to take them (not
/// when v1 cpuacct supplies them on a hybrid host). Throttling keys exist when the cpu controller is enabled.
pub(crate) fn stats(dir: &Path, stats: &mut Stats, usage: bool) -> Result<(), CgroupError> {
    let Some(content) = fs::read_opt(dir, "cpu.stat")? else {
        return Ok(());
    };
    let (u, t) = (&mut stats.cpu.usage, &mut stats.cpu.throttling);
    for (key, v) in fs::flat_keyed(&content) {
        match key {
            "usage_usec" if usage => u.total = v.saturating_mul(1000),
            "user_usec" if usage => u.user = v.saturating_mul(1000),
            "system_usec" if usage => u.kernel = v.saturating_mul(1000),
            "nr_periods" => t.periods = v,
            "nr_throttled" => t.throttled_periods = v,
            "throttled_usec" => t.throttled_time = v.saturating_mul(1000),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn cpuset_stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    stats.cpuset.cpus = read_list(dir, "cpuset.cpus.effective")?;
    stats.cpuset.mems = read_list(dir, "cpuset.mems.effective")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_fixed_points() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(3), 2);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(262_143), 10_000);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1 << 20), 10_000);
    }

    #[test]
    fn shares_to_weight_is_monotonic() {
        let mut last = 0;
        for s in 2..=SHARES_MAX {
            let w = shares_to_weight(s);
            assert!(w >= last && w <= WEIGHT_MAX, "shares {s} -> {w} after {last}");
            last = w;
        }
    }

    #[test]
    fn weight_to_shares_inverts_every_weight() {
        assert_eq!(weight_to_shares(0), 0);
        assert_eq!(weight_to_shares(100), 1024);
        for w in 1..=WEIGHT_MAX {
            assert_eq!(shares_to_weight(weight_to_shares(w)), w, "weight {w}");
        }
    }
}
