//! v2 `hugetlb`: hugetlb.<size>.max (and .rsvd.max where the kernel has reservation limits).

use std::path::Path;

use oci_spec::runtime::LinuxHugepageLimit;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::stats::{HugetlbStats, Stats};
use crate::cgroups::v1::hugetlb::{check_size, page_sizes};

pub(crate) fn apply(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<(), CgroupError> {
    for l in limits {
        let size = l.page_size();
        let file = format!("hugetlb.{size}.max");
        check_size(dir, size, &file)?;
        let value = if l.limit() < 0 {
            "max".to_string()
        } else {
            l.limit().to_string()
        };
        fs::write(dir, &file, &value)?;
        let rsvd = format!("hugetlb.{size}.rsvd.max");
        if fs::has(dir, &rsvd) {
            fs::write(dir, &rsvd, &value)?;
        }
    }
    Ok(())
}

pub(crate) fn stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    for size in page_sizes() {
        let prefix = format!("hugetlb.{size}.");
        if !fs::has(dir, &format!("{prefix}current")) {
            continue;
        }
        let entry = HugetlbStats {
            usage: fs::read_u64(dir, &format!("{prefix}current"))?,
            max: 0,
            failcnt: fs::read_keyed(dir, &format!("{prefix}events"), "max")?,
        };
        stats.hugetlb.insert(size, entry);
    }
    Ok(())
}
