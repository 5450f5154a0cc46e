//! An instance's log: one JSON record per line (docker's json-file shape: time, stream, log), bounded in
//! size by rotation: when the current file passes `max_size` it becomes `.1`, `.1` becomes `.2`, and so on up
//! to `max_files` files in all; the oldest is dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use vessel_api::LogRecord;

/// A line longer than this is written as several records, so one huge line cannot hold memory.
const MAX_LINE: usize = 16 * 1024;

pub struct LogWriter {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    file: Option<File>,
    size: u64,
    partial: [Vec<u8>; 2],
}

/// The files of a log, oldest first (`log.N`, ..., `log.1`, `log`), those that exist.
pub fn log_files(path: &Path, max_files: u32) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..max_files.max(1))
        .rev()
        .map(|n| rotated(path, n))
        .filter(|p| p.exists())
        .collect();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl LogWriter {
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            max_size: max_size.max(4096),
            max_files: max_files.max(1),
            file: Some(file),
            size,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Bytes the container wrote on stdout (`stderr` false) or stderr; whole lines become records now, a
    /// trailing partial line waits for the rest (or for [`LogWriter::flush_partial`]).
    pub fn write(&mut self, stderr: bool, bytes: &[u8]) {
        let idx = usize::from(stderr);
        let mut buf = std::mem::take(&mut self.partial[idx]);
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            self.record(stderr, &buf[start..start + nl + 1]);
            start += nl + 1;
        }
        while buf.len() - start > MAX_LINE {
            self.record(stderr, &buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        buf.drain(..start);
        self.partial[idx] = buf;
    }

    /// Write out partial lines (at the container's exit).
    pub fn flush_partial(&mut self) {
        for idx in 0..2 {
            let buf = std::mem::take(&mut self.partial[idx]);
            if !buf.is_empty() {
                self.record(idx == 1, &buf);
            }
        }
    }

    fn record(&mut self, stderr: bool, line: &[u8]) {
        let rec = LogRecord {
            time: vessel_runtime::clock::now_rfc3339(),
            stream: if stderr { "stderr" } else { "stdout" }.into(),
            log: String::from_utf8_lossy(line).into_owned(),
        };
        let mut text = serde_json::to_vec(&rec).unwrap_or_default();
        text.push(b'\n');
        if self.size > 0 && self.size + text.len() as u64 > self.max_size {
            self.rotate();
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(&text).is_ok() {
                self.size += text.len() as u64;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        if self.max_files <= 1 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..self.max_files - 1).rev() {
                let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            let _ = std::fs::rename(&self.path, rotated(&self.path, 1));
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path).ok();
        self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<LogRecord> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_are_split_and_partials_wait_for_their_end() {
        let dir = std::env::temp_dir().join(format!("vessel-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let _ = std::fs::remove_file(&path);
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        w.write(false, b"one\ntw");
        w.write(true, b"err\n");
        w.write(false, b"o\n");
        w.write(false, b"tail");
        w.flush_partial();
        let got: Vec<(String, String)> = lines(&path).into_iter().map(|r| (r.stream, r.log)).collect();
        assert_eq!(
            got,
            [
                ("stdout".into(), "one\n".into()),
                ("stderr".into(), "err\n".into()),
                ("stdout".into(), "two\n".into()),
                ("stdout".into(), "tail".into())
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_bounds_the_total_size() {
        let dir = std::env::temp_dir().join(format!("vessel-log-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.log");
        let mut w = LogWriter::open(&path, 8192, 3).unwrap();
        for i in 0..5000 {
            w.write(false, format!("line {i}\n").as_bytes());
        }
        let files = log_files(&path, 3);
        assert_eq!(files.len(), 3);
        let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
        assert!(total <= 3 * 8192, "{total}");
        let last = lines(&path).pop().unwrap();
        assert_eq!(last.log, "line 4999\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
