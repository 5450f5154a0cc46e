//! The runtime's log: runc's `--log FILE --log-format text|json`, which clients such as containerd read for
//! the reason a command failed. Without a file, warnings go to stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Config {
    file: Option<PathBuf>,
    format: Format,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

pub fn init(file: Option<PathBuf>, format: Format) {
    let _ = CONFIG.set(Config { file, format });
}

fn record(level: &str, msg: &str, format: Format) -> String {
    let time = crate::clock::now_rfc3339();
    match format {
        Format::Json => serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string(),
        Format::Text => format!("time=\"{time}\" level={level} msg={msg:?}"),
    }
}

fn write(level: &str, msg: &str, also_stderr: bool) {
    let cfg = CONFIG.get();
    match cfg.and_then(|c| c.file.as_ref().map(|f| (f, c.format))) {
        Some((file, format)) => {
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(file) {
                let _ = writeln!(f, "{}", record(level, msg, format));
            }
            if also_stderr {
                let _ = writeln!(std::io::stderr(), "vessel-runtime: {msg}");
            }
        }
        None => {
            let _ = writeln!(std::io::stderr(), "vessel-runtime: {msg}");
        }
    }
}

pub fn warn(msg: &str) {
    write("warning", msg, false);
}

/// The one line a failed command prints (and logs).
pub fn error(msg: &str) {
    write("error", msg, true);
}

/// Record an error in the log file only (when there is one): for messages printed to stderr otherwise.
pub fn error_to_log_file(msg: &str) {
    if let Some((file, format)) = CONFIG.get().and_then(|c| c.file.as_ref().map(|f| (f, c.format))) {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(file) {
            let _ = writeln!(f, "{}", record("error", msg, format));
        }
    }
}

/// A usage error as clap reports it: its first line (for logs) and its whole message (for people: the
/// error, the usage and where help is).
#[derive(Debug, Clone)]
pub struct UsageError {
    pub line: String,
    pub text: String,
}

/// After a failed parse: `Ok(())` when clap printed help or the version (exit 0), else the usage error.
pub fn clap_outcome(e: &clap::Error) -> Result<(), UsageError> {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return Ok(());
    }
    let text = e.to_string();
    let line = text
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    Err(UsageError { line, text })
}

/// An error and its causes on one line, without repeating a cause the message already names (our error
/// types often print their source inline).
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg.replace('\n', " ")
}
