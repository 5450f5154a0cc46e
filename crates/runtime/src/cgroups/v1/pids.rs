//! `pids` (the same files on v1 and v2): the task limit and its statistics.

use std::path::Path;

use oci_spec::runtime::LinuxPids;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::stats::Stats;

/// Whether the spec sets a real limit (0 or negative means "no limit", which needs no controller).
pub(crate) fn requested(pids: &LinuxPids) -> bool {
    pids.limit() > 0
}

/// The pids.max value for an OCI limit: a positive number, else "max".
pub(crate) fn max_value(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

pub(crate) fn apply(dir: &Path, pids: &LinuxPids) -> Result<(), CgroupError> {
    fs::write(dir, "pids.max", max_value(pids.limit()))
}

pub(crate) fn stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    stats.pids.current = fs::read_u64_or_zero(dir, "pids.current")?;
    // "max" reads as u64::MAX; runc reports no limit as 0 (omitted).
    stats.pids.limit = match fs::read_u64_or_zero(dir, "pids.max")? {
        u64::MAX => 0,
        n => n,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_values() {
        assert_eq!(max_value(10), "10");
        assert_eq!(max_value(0), "max");
        assert_eq!(max_value(-1), "max");
    }
}
