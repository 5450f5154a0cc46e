//! A container's persisted state under the `--root` directory: the record, its status, and the lock that keeps
//! two commands from changing one container at the same time.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = ".lock";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("Container {0} does not exist")]
    NotFound(String),
    #[error("Container {0} already exists")]
    Exists(String),
    #[error("Invalid container id {0:?}: use letters, digits, '_', '-', '.', '+' and no leading '.'")]
    BadId(String),
    #[error("Container {0} is still being created")]
    Creating(String),
    #[error("Cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Corrupt state file {path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Lifecycle status as the runtime-spec names it (plus `paused`, as runc reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What `create` records for later commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Start time of the init (field 22 of /proc/PID/stat), so a reused pid is never mistaken for it.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    pub owner: String,
    pub cgroup: Cgroup,
    /// The config as it was at create time: later edits of config.json must not affect the container.
    pub spec: Spec,
    pub use_systemd_cgroup: bool,
}

/// A container's state directory, opened (and possibly locked).
pub struct StateDir {
    pub id: String,
    pub dir: PathBuf,
    _lock: Option<File>,
}

pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(StateError::BadId(id.to_string()))
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl StateDir {
    /// Make a new state directory; fails if the id is taken. The directory is locked until dropped.
    pub fn create(root: &Path, id: &str) -> Result<StateDir, StateError> {
        validate_id(id)?;
        fs::create_dir_all(root).map_err(io("create", root))?;
        let dir = root.join(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.into()))
            }
            Err(e) => return Err(io("create", &dir)(e)),
        }
        let lock = lock_dir(&dir)?;
        Ok(StateDir {
            id: id.to_string(),
            dir,
            _lock: Some(lock),
        })
    }

    /// Open an existing container's state directory, taking its lock.
    pub fn open_locked(root: &Path, id: &str) -> Result<StateDir, StateError> {
        let mut sd = StateDir::open(root, id)?;
        sd._lock = Some(lock_dir(&sd.dir)?);
        // The directory may have been deleted while we waited for the lock.
        if !sd.dir.exists() {
            return Err(StateError::NotFound(id.into()));
        }
        Ok(sd)
    }

    /// Open without locking, for read-only commands (state, list, ps).
    pub fn open(root: &Path, id: &str) -> Result<StateDir, StateError> {
        validate_id(id)?;
        let dir = root.join(id);
        if !dir.is_dir() {
            return Err(StateError::NotFound(id.into()));
        }
        Ok(StateDir {
            id: id.to_string(),
            dir,
            _lock: None,
        })
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    /// Write the record atomically (temp file + rename), so a reader never sees half of it.
    pub fn save(&self, record: &ContainerRecord) -> Result<(), StateError> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(".state.json.tmp");
        let mut f = File::create(&tmp).map_err(io("write", &tmp))?;
        let data = serde_json::to_vec(record).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        f.write_all(&data).map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &path))
    }

    pub fn load(&self) -> Result<ContainerRecord, StateError> {
        let path = self.dir.join(STATE_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::Creating(self.id.clone()))
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        serde_json::from_slice(&data).map_err(|source| StateError::Corrupt { path, source })
    }

    pub fn remove(&self) -> Result<(), StateError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &self.dir)(e)),
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open", &path))?;
    // A POSIX record lock, not flock: it belongs to this process only, so the container process we fork does
    // not inherit it and hold it until its exec.
    // SAFETY: struct flock is plain data; zeroed is a valid value that we then fill in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    loop {
        // SAFETY: F_SETLKW reads the flock struct we pass; the descriptor is valid and owned.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLKW, &fl) };
        if r == 0 {
            return Ok(f);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(io("lock", &path)(err));
        }
    }
}

/// The container ids under `root`, sorted.
pub fn list_ids(root: &Path) -> Result<Vec<String>, StateError> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", root)(e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| validate_id(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Start time of a process in clock ticks since boot, or None if it does not exist or is a zombie.
pub fn live_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 overall is the 20th after the state field.
    fields.nth(18)?.parse().ok()
}

impl ContainerRecord {
    /// True while the init process we started is alive (not reaped, not a zombie, not a reused pid).
    pub fn init_alive(&self) -> bool {
        live_start_time(self.pid) == Some(self.pid_start_time)
    }

    pub fn status(&self, state_dir: &StateDir) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        // Frozen first: a created container can be paused too, and resumes to created.
        if self.cgroup.is_frozen().unwrap_or(false) {
            return Status::Paused;
        }
        if state_dir.fifo_path().exists() {
            return Status::Created;
        }
        Status::Running
    }

    /// The runtime-spec state document, with runc's extra fields that clients read.
    pub fn state_json(&self, status: Status) -> serde_json::Value {
        let pid = if status == Status::Stopped { 0 } else { self.pid };
        let annotations = self.spec.annotations().clone().unwrap_or_default();
        serde_json::json!({
            "ociVersion": crate::spec::OCI_VERSION,
            "id": self.id,
            "pid": pid,
            "status": status.to_string(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
            "annotations": annotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn own_start_time_is_read_and_dead_pid_is_none() {
        let me = std::process::id() as i32;
        assert!(live_start_time(me).is_some());
        assert!(live_start_time(i32::MAX).is_none());
    }
}
