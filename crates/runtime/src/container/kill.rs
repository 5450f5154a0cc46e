//! `kill`: send a signal to the container's init, or with `--all` to every process in its cgroup.

use std::str::FromStr;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::{ContainerError, Runtime};
use crate::state::Status;

/// `KILL`, `SIGKILL` or `9`.
pub fn parse_signal(s: &str) -> Result<Signal, ContainerError> {
    let bad = || ContainerError::BadSignal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

pub fn kill(rt: &Runtime, id: &str, sig: Signal, all: bool) -> Result<(), ContainerError> {
    let sd = rt.open(id, true)?;
    let record = sd.load()?;
    let status = record.status(&sd);
    if status == Status::Stopped && !all {
        return Err(ContainerError::WrongStatus {
            id: id.into(),
            status,
            action: "signal it",
        });
    }
    if all {
        for pid in record.cgroup.pids()? {
            let _ = signal::kill(Pid::from_raw(pid), sig);
        }
        // A frozen process gets the signal only once thawed; SIGKILL must not wait for `resume`.
        if status == Status::Paused && sig == Signal::SIGKILL {
            record.cgroup.thaw()?;
        }
        return Ok(());
    }
    signal::kill(Pid::from_raw(record.pid), sig)
        .map_err(ContainerError::os(format!("send {sig} to container {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
