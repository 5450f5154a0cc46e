//! v1 `hugetlb` (hugetlb.<size>.limit_in_bytes), plus the page-size names both versions use ("2MB", "1GB").

use std::path::Path;

use oci_spec::runtime::LinuxHugepageLimit;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::stats::{HugetlbStats, Stats};

/// The kernel's name of a huge page size given in KiB: 2048 -> "2MB", 1048576 -> "1GB", 64 -> "64KB".
pub(crate) fn size_name(kib: u64) -> String {
    let units = ["KB", "MB", "GB", "TB", "PB"];
    let mut value = kib;
    let mut unit = 0;
    // Divide while the value is a whole multiple of 1024 (low ten bits clear).
    while value >= 1024 && value & 1023 == 0 && unit + 1 < units.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", units[unit])
}

/// The huge page sizes this kernel supports, named as in the cgroup files.
pub(crate) fn page_sizes() -> Vec<String> {
    let mut sizes: Vec<(u64, String)> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kib = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some((kib, size_name(kib)))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, n)| n).collect()
}

/// Checks a spec page size ("2MB") and explains a missing file. `file` is the limit file that does not exist.
pub(crate) fn check_size(dir: &Path, size: &str, file: &str) -> Result<(), CgroupError> {
    let well_formed = size.is_ascii()
        && size.len() > 2
        && size.ends_with('B')
        && size[..size.len() - 2].chars().all(|c| c.is_ascii_digit())
        && size[size.len() - 2..size.len() - 1]
            .chars()
            .all(|c| "KMGTP".contains(c));
    let setting = format!("linux.resources.hugepageLimits pageSize '{size}'");
    if !well_formed {
        let reason = "expected a number and a unit such as 2MB or 1GB".to_string();
        return Err(CgroupError::InvalidResource { setting, reason });
    }
    if !fs::has(dir, file) {
        let reason = format!(
            "this kernel has no such huge page size ({} does not exist; supported: {})",
            dir.join(file).display(),
            page_sizes().join(", ")
        );
        return Err(CgroupError::Unsupported { setting, reason });
    }
    Ok(())
}

pub(crate) fn apply(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<(), CgroupError> {
    for l in limits {
        let size = l.page_size();
        let file = format!("hugetlb.{size}.limit_in_bytes");
        check_size(dir, size, &file)?;
        let value = l.limit().max(-1);
        fs::write(dir, &file, value)?;
        let rsvd = format!("hugetlb.{size}.rsvd.limit_in_bytes");
        if fs::has(dir, &rsvd) {
            fs::write(dir, &rsvd, value)?;
        }
    }
    Ok(())
}

pub(crate) fn stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    for size in page_sizes() {
        let prefix = format!("hugetlb.{size}.");
        if !fs::has(dir, &format!("{prefix}usage_in_bytes")) {
            continue;
        }
        let entry = HugetlbStats {
            usage: fs::read_u64(dir, &format!("{prefix}usage_in_bytes"))?,
            max: fs::read_u64_or_zero(dir, &format!("{prefix}max_usage_in_bytes"))?,
            failcnt: fs::read_u64_or_zero(dir, &format!("{prefix}failcnt"))?,
        };
        stats.hugetlb.insert(size, entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_names() {
        assert_eq!(size_name(2048), "2MB");
        assert_eq!(size_name(1048576), "1GB");
        assert_eq!(size_name(64), "64KB");
        assert_eq!(size_name(1536), "1536KB");
        assert_eq!(size_name(32768), "32MB");
    }

    #[test]
    fn malformed_page_sizes_are_rejected() {
        for bad in ["2M", "MB", "2XB", "../2MB", "2 MB"] {
            let e = check_size(Path::new("/nonexistent"), bad, "x").unwrap_err();
            assert!(matches!(e, CgroupError::InvalidResource { .. }), "{bad}: {e}");
        }
        let e = check_size(Path::new("/nonexistent"), "2MB", "hugetlb.2MB.limit_in_bytes").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
