//! Reading and writing cgroup files, with errors that name the file and the value.
//!
//! cgroupfs files are written with one write(2) of the whole value, never created and never truncated: a missing
//! file means a missing controller or kernel feature and must not turn into a "permission denied" from O_CREAT.

use std::fmt::Display;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::error::{write_hint, CgroupError};

/// Writes `value` to `dir/file` in one write(2).
pub(crate) fn write(dir: &Path, file: &str, value: impl Display) -> Result<(), CgroupError> {
    let value = value.to_string();
    write_raw(dir, file, &value).map_err(|cause| write_error(dir, file, &value, cause))
}

/// Writes `value` to `dir/file`, returning the bare OS error so that callers can react to a specific errno.
pub(crate) fn write_raw(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(dir.join(file))?;
    let n = f.write(value.as_bytes())?;
    if n != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write ({n} of {} bytes)", value.len()),
        ));
    }
    Ok(())
}

/// Builds the error for a failed write of `value` to `dir/file`.
pub(crate) fn write_error(dir: &Path, file: &str, value: &str, cause: io::Error) -> CgroupError {
    let hint = write_hint(&cause);
    CgroupError::Write {
        path: dir.join(file),
        value: value.to_string(),
        cause,
        hint,
    }
}

/// Reads `dir/file` whole.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|cause| CgroupError::Read { path, cause })
}

/// Reads `dir/file`, or `None` when it does not exist.
pub(crate) fn read_opt(dir: &Path, file: &str) -> Result<Option<String>, CgroupError> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(CgroupError::Read { path, cause }),
    }
}

/// Whether `dir/file` exists.
pub(crate) fn has(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// Parses one cgroup number; "max" (v2 "no limit") reads as `u64::MAX`.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// Reads a file holding a single number (or "max").
pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    let content = read(dir, file)?;
    parse_u64(&content).ok_or_else(|| {
        parse_error(
            dir,
            file,
            format!("expected a number, found '{}'", content.trim()),
        )
    })
}

/// Reads a file holding a single number, 0 when the file does not exist.
pub(crate) fn read_u64_or_zero(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    match read_opt(dir, file)? {
        None => Ok(0),
        Some(content) => parse_u64(&content).ok_or_else(|| {
            parse_error(
                dir,
                file,
                format!("expected a number, found '{}'", content.trim()),
            )
        }),
    }
}

/// Builds a parse error for `dir/file`.
pub(crate) fn parse_error(dir: &Path, file: &str, detail: impl Into<String>) -> CgroupError {
    CgroupError::Parse {
        path: dir.join(file),
        detail: detail.into(),
    }
}

/// Iterates a flat-keyed file ("key value" per line, e.g. memory.stat, cpu.stat), skipping lines that do not
/// have exactly a key and a number.
pub(crate) fn flat_keyed(content: &str) -> impl Iterator<Item = (&str, u64)> {
    content.lines().filter_map(|line| {
        let mut it = line.split_whitespace();
        let key = it.next()?;
        let value = parse_u64(it.next()?)?;
        it.next().is_none().then_some((key, value))
    })
}

/// Reads one key of a flat-keyed file, 0 when the key or the file is absent.
pub(crate) fn read_keyed(dir: &Path, file: &str, key: &str) -> Result<u64, CgroupError> {
    Ok(read_opt(dir, file)?
        .and_then(|c| flat_keyed(&c).find(|(k, _)| *k == key).map(|(_, v)| v))
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_u64_reads_numbers_and_max() {
        assert_eq!(parse_u64("42\n"), Some(42));
        assert_eq!(parse_u64("max"), Some(u64::MAX));
        assert_eq!(parse_u64("-1"), None);
    }

    #[test]
    fn flat_keyed_skips_malformed_lines() {
        let c = "usage_usec 10\nbad line here\nnr_periods 3\nempty\n";
        let v: Vec<_> = flat_keyed(c).collect();
        assert_eq!(v, vec![("usage_usec", 10), ("nr_periods", 3)]);
    }

    #[test]
    fn write_error_names_file_value_and_hint() {
        let cause = io::Error::from_raw_os_error(libc::EBUSY);
        let e = write_error(
            Path::new("/sys/fs/cgroup/memory/x"),
            "memory.limit_in_bytes",
            "4096",
            cause,
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("Failed to write '4096' to /sys/fs/cgroup/memory/x/memory.limit_in_bytes"),
            "{msg}"
        );
        assert!(msg.contains("below the current usage"), "{msg}");
    }
}
