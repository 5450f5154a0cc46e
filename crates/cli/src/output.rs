//! Human output: sizes, ages and aligned tables; every line goes through [`out`], which ends the process
//! quietly when stdout is a closed pipe (`vessel ps | head -1`, `vessel images | grep -q x`).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.3} {}", UNITS[u]).replace(".000 ", " ")
    }
}

/// Print one line to stdout; a closed pipe ends the process with status 0 and no message.
pub fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if writeln!(o, "{line}").and_then(|_| o.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Seconds since the epoch of an RFC 3339 time (UTC `Z` or an offset; fractions ignored).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    vessel_api::time::parse_rfc3339(s).map(|d| d.as_secs() as i64)
}

pub fn age(created: Option<&str>) -> String {
    let Some(t) = created.and_then(parse_rfc3339) else {
        return "unknown".into();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let d = (now - t).max(0);
    match d {
        0..=59 => "less than a minute ago".into(),
        60..=3599 => format!("{} minutes ago", d / 60),
        3600..=86_399 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

/// Print rows under a header, columns padded to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out(parts.join("   ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// A command's result: the text for people, or the JSON with `--format json`.
pub fn emit(g: &crate::cli::Global, text: impl std::fmt::Display, json: serde_json::Value) {
    if g.json() {
        out(json);
    } else {
        let text = text.to_string();
        if !text.is_empty() {
            out(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1_500_000), "1.500 MB");
        assert_eq!(parse_rfc3339("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00.5+01:00"), Some(951_865_200));
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
