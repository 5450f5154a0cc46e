//! [`Progress`] implementations: [`NoProgress`] (silent) and [`TerminalProgress`] (bars per layer on a
//! terminal, plain lines otherwise).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{short, Progress};

/// Discards all progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn layer_start(&self, _digest: &str, _size: u64) {}
    fn layer_advance(&self, _digest: &str, _bytes: u64) {}
    fn layer_done(&self, _digest: &str) {}
    fn message(&self, _line: &str) {}
}

/// Progress on stdout: one bar per layer (bytes, rate, ETA) when stdout is a terminal, otherwise one line when
/// a layer starts and one when it is done (size, time, rate), plus the messages.
pub struct TerminalProgress {
    mode: Mode,
}

enum Mode {
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
        style: ProgressStyle,
    },
    Lines {
        layers: Mutex<HashMap<String, Layer>>,
    },
}

struct Layer {
    size: u64,
    done: u64,
    started: Instant,
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminalProgress {
    /// Bars when stdout is a terminal, lines otherwise.
    pub fn new() -> Self {
        if std::io::stdout().is_terminal() {
            Self::bars()
        } else {
            Self::lines()
        }
    }

    /// Always plain lines.
    pub fn lines() -> Self {
        TerminalProgress {
            mode: Mode::Lines {
                layers: Mutex::new(HashMap::new()),
            },
        }
    }

    fn bars() -> Self {
        let style = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        TerminalProgress {
            mode: Mode::Bars {
                multi,
                bars: Mutex::new(HashMap::new()),
                style,
            },
        }
    }
}

/// 1536 → "1.5 KiB".
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// "0123456789ab: done, 1.1 MiB in 0.3s (3.7 MiB/s)"; the rate counts the bytes transferred in this run.
fn done_line(digest: &str, size: u64, transferred: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = human((transferred as f64 / secs) as u64);
    format!(
        "{}: done, {} in {secs:.1}s ({rate}/s)",
        short(digest),
        human(size)
    )
}

fn println(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

impl Progress for TerminalProgress {
    fn layer_start(&self, digest: &str, size: u64) {
        match &self.mode {
            Mode::Bars { multi, bars, style } => {
                let bar = multi.add(ProgressBar::new(size));
                bar.set_style(style.clone());
                bar.set_prefix(short(digest).to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                bars.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(digest.to_string(), bar);
            }
            Mode::Lines { layers } => {
                println(&format!("{}: {} ...", short(digest), human(size)));
                let layer = Layer {
                    size,
                    done: 0,
                    started: Instant::now(),
                };
                layers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(digest.to_string(), layer);
            }
        }
    }

    fn layer_advance(&self, digest: &str, bytes: u64) {
        match &self.mode {
            Mode::Bars { bars, .. } => {
                if let Some(bar) = bars.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
                    bar.inc(bytes);
                }
            }
            Mode::Lines { layers } => {
                if let Some(layer) = layers.lock().unwrap_or_else(|p| p.into_inner()).get_mut(digest) {
                    layer.done += bytes;
                }
            }
        }
    }

    fn layer_done(&self, digest: &str) {
        match &self.mode {
            Mode::Bars { multi, bars, .. } => {
                if let Some(bar) = bars.lock().unwrap_or_else(|p| p.into_inner()).remove(digest) {
                    // The bar gives way to a permanent line, as in line mode.
                    let size = bar.length().unwrap_or(0).max(bar.position());
                    let line = done_line(digest, size, bar.position(), bar.elapsed());
                    bar.finish_and_clear();
                    if multi.println(&line).is_err() {
                        println(&line);
                    }
                }
            }
            Mode::Lines { layers } => {
                if let Some(layer) = layers.lock().unwrap_or_else(|p| p.into_inner()).remove(digest) {
                    println(&done_line(
                        digest,
                        layer.size.max(layer.done),
                        layer.done,
                        layer.started.elapsed(),
                    ));
                }
            }
        }
    }

    fn message(&self, line: &str) {
        match &self.mode {
            Mode::Bars { multi, .. } => {
                if multi.println(line).is_err() {
                    println(line);
                }
            }
            Mode::Lines { .. } => println(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 << 20), "5.0 MiB");
        assert_eq!(short("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }

    #[test]
    fn lines_mode_tracks_layers() {
        let p = TerminalProgress::lines();
        p.layer_start("sha256:aa", 10);
        p.layer_advance("sha256:aa", 4);
        p.layer_advance("sha256:unknown", 4);
        p.layer_done("sha256:aa");
        p.message("hello");
        let Mode::Lines { layers } = &p.mode else {
            panic!("not lines")
        };
        assert!(layers.lock().unwrap().is_empty());
    }
}
