//! v1 `blkio`: proportional weights (CFQ's blkio.weight or BFQ's blkio.bfq.weight) and throttling.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::stats::{BlkioEntry, Stats};

/// Whether the spec sets anything for the block I/O controller.
pub(crate) fn requested(b: &LinuxBlockIo) -> bool {
    let some = |v: &Option<Vec<LinuxThrottleDevice>>| v.as_ref().is_some_and(|v| !v.is_empty());
    b.weight().is_some_and(|w| w != 0)
        || b.leaf_weight().is_some_and(|w| w != 0)
        || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
        || some(b.throttle_read_bps_device())
        || some(b.throttle_write_bps_device())
        || some(b.throttle_read_iops_device())
        || some(b.throttle_write_iops_device())
}

/// The throttle lists of a spec with their v1 file names.
pub(crate) fn throttles(b: &LinuxBlockIo) -> [(&'static str, &Option<Vec<LinuxThrottleDevice>>); 4] {
    [
        ("blkio.throttle.read_bps_device", b.throttle_read_bps_device()),
        ("blkio.throttle.write_bps_device", b.throttle_write_bps_device()),
        ("blkio.throttle.read_iops_device", b.throttle_read_iops_device()),
        ("blkio.throttle.write_iops_device", b.throttle_write_iops_device()),
    ]
}

pub(crate) fn apply(dir: &Path, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    // CFQ (removed in Linux 5.0) has blkio.weight; BFQ has blkio.bfq.weight with the same 1..1000 range.
    let (weight_file, weight_device_file) = if fs::has(dir, "blkio.weight") {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    let needs_weight_file = b.weight().is_some_and(|w| w != 0)
        || b.weight_device().iter().flatten().any(|d| d.weight().is_some());
    if needs_weight_file && !fs::has(dir, weight_file) {
        return Err(CgroupError::Unsupported {
            setting: "linux.resources.blockIO weight".into(),
            reason: format!(
                "neither blkio.weight nor blkio.bfq.weight exists in {}: no I/O scheduler with weights (CFQ or BFQ) is available",
                dir.display()
            ),
        });
    }
    if let Some(w) = b.weight().filter(|&w| w != 0) {
        fs::write(dir, weight_file, w)?;
    }
    // Leaf weights went away with CFQ; where the files do not exist there is nothing to set.
    if let Some(w) = b.leaf_weight().filter(|&w| w != 0) {
        if fs::has(dir, "blkio.leaf_weight") {
            fs::write(dir, "blkio.leaf_weight", w)?;
        }
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            fs::write(
                dir,
                weight_device_file,
                format!("{}:{} {}", d.major(), d.minor(), w),
            )?;
        }
        if let Some(w) = d.leaf_weight() {
            if fs::has(dir, "blkio.leaf_weight_device") {
                fs::write(
                    dir,
                    "blkio.leaf_weight_device",
                    format!("{}:{} {}", d.major(), d.minor(), w),
                )?;
            }
        }
    }
    for (file, list) in throttles(b) {
        for d in list.iter().flatten() {
            fs::write(dir, file, format!("{}:{} {}", d.major(), d.minor(), d.rate()))?;
        }
    }
    Ok(())
}

/// Parses a v1 blkio statistics file: "8:0 Read 4096" lines (or "8:0 4096" for time/sectors); "Total" lines
/// are skipped.
pub(crate) fn parse_entries(content: &str) -> Result<Vec<BlkioEntry>, String> {
    let mut out = Vec::new();
    for line in content.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (dev, op, value) = match fields[..] {
            [dev, op, value] => (dev, op, value),
            [dev, value] if dev.contains(':') => (dev, "", value),
            _ => continue,
        };
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("'{v}' in line '{line}' is not a number"))
        };
        out.push(BlkioEntry {
            major: num(major)?,
            minor: num(minor)?,
            op: op.to_string(),
            value: num(value)?,
        });
    }
    Ok(out)
}

fn read_entries(dir: &Path, file: &str) -> Result<Option<Vec<BlkioEntry>>, CgroupError> {
    match fs::read_opt(dir, file)? {
        None => Ok(None),
        Some(c) => parse_entries(&c)
            .map(Some)
            .map_err(|detail| fs::parse_error(dir, file, detail)),
    }
}

pub(crate) fn stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    let s = &mut stats.blkio;
    // CFQ statistics when they have data, else BFQ's, else the throttling layer's (always there).
    if let Some(bytes) = read_entries(dir, "blkio.io_service_bytes_recursive")?.filter(|v| !v.is_empty()) {
        s.io_service_bytes_recursive = bytes;
        let get = |f: &str| Ok::<_, CgroupError>(read_entries(dir, f)?.unwrap_or_default());
        s.io_serviced_recursive = get("blkio.io_serviced_recursive")?;
        s.io_queued_recursive = get("blkio.io_queued_recursive")?;
        s.io_service_time_recursive = get("blkio.io_service_time_recursive")?;
        s.io_wait_time_recursive = get("blkio.io_wait_time_recursive")?;
        s.io_merged_recursive = get("blkio.io_merged_recursive")?;
        s.io_time_recursive = get("blkio.time_recursive")?;
        s.sectors_recursive = get("blkio.sectors_recursive")?;
        return Ok(());
    }
    if let Some(bytes) = read_entries(dir, "blkio.bfq.io_service_bytes_recursive")?.filter(|v| !v.is_empty())
    {
        s.io_service_bytes_recursive = bytes;
        s.io_serviced_recursive = read_entries(dir, "blkio.bfq.io_serviced_recursive")?.unwrap_or_default();
        return Ok(());
    }
    s.io_service_bytes_recursive =
        read_entries(dir, "blkio.throttle.io_service_bytes_recursive")?.unwrap_or_default();
    s.io_serviced_recursive = read_entries(dir, "blkio.throttle.io_serviced_recursive")?.unwrap_or_default();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blkio_stat_lines() {
        let c = "8:0 Read 4096\n8:0 Write 0\n8:16 Total 12\nTotal 4108\n";
        let e = parse_entries(c).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Read".into(),
                value: 4096
            }
        );
        assert_eq!(e[2].minor, 16);
        let e = parse_entries("8:0 77\n").unwrap();
        assert_eq!(
            e[0],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: String::new(),
                value: 77
            }
        );
        assert!(parse_entries("8:x Read 1\n").is_err());
    }
}
