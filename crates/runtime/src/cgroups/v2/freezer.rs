//! v2 freezing: cgroup.freeze requests, cgroup.events "frozen" confirms.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;
use crate::cgroups::v1::freezer::FREEZE_TIMEOUT;

/// The "frozen" value of cgroup.events, `None` on kernels without the v2 freezer (before 5.2).
fn frozen_event(dir: &Path) -> Result<Option<bool>, CgroupError> {
    let events = fs::read(dir, "cgroup.events")?;
    let frozen = fs::flat_keyed(&events)
        .find(|(k, _)| *k == "frozen")
        .map(|(_, v)| v == 1);
    Ok(frozen)
}

fn set(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    if !fs::has(dir, "cgroup.freeze") || frozen_event(dir)?.is_none() {
        return Err(CgroupError::Unsupported {
            setting: "freezing the container".into(),
            reason: format!(
                "{} has no cgroup v2 freezer (Linux 5.2 or later is needed)",
                dir.display()
            ),
        });
    }
    fs::write(dir, "cgroup.freeze", u8::from(frozen))?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if frozen_event(dir)? == Some(frozen) {
            return Ok(());
        }
        if start.elapsed() > FREEZE_TIMEOUT {
            if frozen {
                // Leave nothing half-frozen behind; the timeout is the error to report.
                let _ = fs::write(dir, "cgroup.freeze", 0);
            }
            return Err(CgroupError::Timeout {
                path: dir.join("cgroup.events"),
                state: if frozen { "frozen 1" } else { "frozen 0" },
                seconds: FREEZE_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

pub(crate) fn freeze(dir: &Path) -> Result<(), CgroupError> {
    set(dir, true)
}

pub(crate) fn thaw(dir: &Path) -> Result<(), CgroupError> {
    set(dir, false)
}

pub(crate) fn is_frozen(dir: &Path) -> Result<bool, CgroupError> {
    Ok(fs::read(dir, "cgroup.freeze")?.trim() == "1")
}
