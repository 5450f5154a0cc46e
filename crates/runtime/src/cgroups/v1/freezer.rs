//! v1 `freezer`: freezer.state THAWED / FREEZING / FROZEN.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;

const STATE: &str = "freezer.state";

/// How long a freeze may take before it is given up (and the cgroup thawed again).
pub(crate) const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

fn state(dir: &Path) -> Result<String, CgroupError> {
    Ok(fs::read(dir, STATE)?.trim().to_string())
}

/// Freezes the cgroup and waits until the kernel reports FROZEN. FREEZING can persist while a task sits in an
/// uninterruptible sleep; the request is repeated meanwhile, and on timeout the cgroup is thawed again.
pub(crate) fn freeze(dir: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        fs::write(dir, STATE, "FROZEN")?;
        if state(dir)? == "FROZEN" {
            return Ok(());
        }
        if start.elapsed() > FREEZE_TIMEOUT {
            // Leave nothing half-frozen behind; the timeout is the error to report.
            let _ = fs::write(dir, STATE, "THAWED");
            return Err(CgroupError::Timeout {
                path: dir.join(STATE),
                state: "FROZEN",
                seconds: FREEZE_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

pub(crate) fn thaw(dir: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        fs::write(dir, STATE, "THAWED")?;
        if state(dir)? == "THAWED" {
            return Ok(());
        }
        if start.elapsed() > FREEZE_TIMEOUT {
            return Err(CgroupError::Timeout {
                path: dir.join(STATE),
                state: "THAWED",
                seconds: FREEZE_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn is_frozen(dir: &Path) -> Result<bool, CgroupError> {
    Ok(state(dir)? == "FROZEN")
}
