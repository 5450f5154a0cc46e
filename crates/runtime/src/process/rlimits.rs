//! POSIX resource limits of the container process.

use oci_spec::runtime::PosixRlimit;

#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("Unknown rlimit type {0}")]
    Unknown(String),
    #[error("Cannot set {name} to soft {soft} / hard {hard}: {source}")]
    Set {
        name: String,
        soft: u64,
        hard: u64,
        source: std::io::Error,
    },
    #[error("Rlimit {0} is listed twice")]
    Duplicate(String),
}

fn resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// Check names and duplicates before anything is started, so a bad config fails at create.
pub fn validate(limits: &[PosixRlimit]) -> Result<(), RlimitError> {
    let mut seen = Vec::new();
    for l in limits {
        let name = l.typ().to_string();
        resource(&name).ok_or_else(|| RlimitError::Unknown(name.clone()))?;
        if seen.contains(&name) {
            return Err(RlimitError::Duplicate(name));
        }
        seen.push(name);
    }
    Ok(())
}

pub fn apply(limits: &[PosixRlimit]) -> Result<(), RlimitError> {
    for l in limits {
        let name = l.typ().to_string();
        let res = resource(&name).ok_or_else(|| RlimitError::Unknown(name.clone()))?;
        let lim = libc::rlimit {
            rlim_cur: l.soft(),
            rlim_max: l.hard(),
        };
        // SAFETY: setrlimit reads the struct we pass by reference.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(RlimitError::Set {
                name,
                soft: l.soft(),
                hard: l.hard(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}
