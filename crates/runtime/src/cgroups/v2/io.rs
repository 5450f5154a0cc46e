//! v2 `io`: weights (io.bfq.weight with BFQ, else io.weight) and limits (io.max), and io.stat statistics.

use std::path::Path;

use oci_spec::runtime::LinuxBlockIo;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::stats::{BlkioEntry, Stats};

/// Maps a v1 blkio weight (10..1000) onto io.weight (1..10000).
pub fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    let w = weight.clamp(10, 1000);
    1 + (w - 10) * 9999 / 990
}

pub(crate) fn apply(dir: &Path, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    // BFQ takes v1-range weights as they are; io.weight (blk-iocost) uses its own range.
    let bfq = fs::has(dir, "io.bfq.weight");
    let (file, convert): (&str, fn(u64) -> u64) = if bfq {
        ("io.bfq.weight", |w| w)
    } else {
        ("io.weight", blkio_weight_to_io_weight)
    };
    let needs_weight = b.weight().is_some_and(|w| w != 0)
        || b.weight_device().iter().flatten().any(|d| d.weight().is_some());
    if needs_weight && !fs::has(dir, file) {
        return Err(CgroupError::Unsupported {
            setting: "linux.resources.blockIO weight".into(),
            reason: format!("neither io.bfq.weight nor io.weight exists in {}", dir.display()),
        });
    }
    if let Some(w) = b.weight().filter(|&w| w != 0) {
        fs::write(dir, file, convert(u64::from(w)))?;
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            fs::write(
                dir,
                file,
                format!("{}:{} {}", d.major(), d.minor(), convert(u64::from(w))),
            )?;
        }
    }
    // Leaf weights have no v2 counterpart.
    let limits = [
        ("rbps", b.throttle_read_bps_device()),
        ("wbps", b.throttle_write_bps_device()),
        ("riops", b.throttle_read_iops_device()),
        ("wiops", b.throttle_write_iops_device()),
    ];
    for (key, list) in limits {
        for d in list.iter().flatten() {
            fs::write(
                dir,
                "io.max",
                format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()),
            )?;
        }
    }
    Ok(())
}

/// Parses io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0") into v1-style entries: bytes and
/// operations, each with "Read" / "Write" rows.
pub(crate) fn parse_io_stat(content: &str) -> Result<(Vec<BlkioEntry>, Vec<BlkioEntry>), String> {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for line in content.lines() {
        let mut fields = line.split_whitespace();
        let Some(dev) = fields.next() else { continue };
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("'{v}' in line '{line}' is not a number"))
        };
        let (major, minor) = (num(major)?, num(minor)?);
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let (table, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            table.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value: num(v)?,
            });
        }
    }
    Ok((bytes, ios))
}

pub(crate) fn stats(dir: &Path, stats: &mut Stats) -> Result<(), CgroupError> {
    let Some(content) = fs::read_opt(dir, "io.stat")? else {
        return Ok(());
    };
    let (bytes, ios) = parse_io_stat(&content).map_err(|d| fs::parse_error(dir, "io.stat", d))?;
    stats.blkio.io_service_bytes_recursive = bytes;
    stats.blkio.io_serviced_recursive = ios;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_conversion() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1), 1);
    }

    #[test]
    fn io_stat_parsing() {
        let (b, i) =
            parse_io_stat("8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n")
                .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(
            b[0],
            BlkioEntry {
                major: 8,
                minor: 16,
                op: "Read".into(),
                value: 1459200
            }
        );
        assert_eq!(
            i[1],
            BlkioEntry {
                major: 8,
                minor: 16,
                op: "Write".into(),
                value: 353
            }
        );
        assert!(parse_io_stat("8:0 rbytes=x\n").is_err());
    }
}
