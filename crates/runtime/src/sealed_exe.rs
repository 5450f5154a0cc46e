//! Protection against CVE-2019-5736 without copying the binary on every call.
//!
//! The attack: a container process gets hold of the runtime's own executable (through `/proc/PID/exe` of a
//! runtime process that entered the container, or by making the container's program `#!/proc/self/exe`) and
//! writes to it after the runtime exits, replacing the host's binary. runc and youki copy themselves into a
//! sealed memfd on every invocation (youki: 11.5 MB each time).
//!
//! vessel-runtime instead runs the commands that put a process into a container (create, run, exec) from a
//! **read-only bind mount** of its own binary, made once per boot and binary under /run/vessel/sealed. Every process
//! it forks into a container then has `/proc/self/exe` on a read-only mount: opening it for writing fails
//! whatever the container's capabilities (EROFS for the exploit's O_WRONLY|O_TRUNC; a plain write-open may
//! report ETXTBSY first while the binary runs). The cost is one re-exec on those commands, and nothing on the
//! others. Until it execs the container's program, the process is also non-dumpable, so other container
//! processes cannot open its `/proc/PID/exe` at all.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

/// Set in the environment of the re-executed runtime so that it does not loop.
const REEXEC_MARK: &str = "_VESSEL_RUNTIME_SEALED";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("Cannot protect the runtime binary (CVE-2019-5736): cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Cannot protect the runtime binary (CVE-2019-5736): cannot {action} {path}: {source}")]
    Os {
        action: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
}

/// True if our own executable is on a read-only mount.
pub fn running_sealed() -> bool {
    match std::fs::File::open("/proc/self/exe") {
        Ok(f) => nix::sys::statvfs::fstatvfs(&f)
            .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)),
        Err(_) => false,
    }
}

/// One place per host, whatever `--root` a caller uses, so the mounts do not multiply.
pub const SEALED_DIR: &str = "/run/vessel/sealed";

/// Where the read-only view of the binary lives: keyed by device and inode, so an upgraded binary gets its own.
fn sealed_path(exe: &std::fs::Metadata) -> PathBuf {
    Path::new(SEALED_DIR).join(format!("vessel-runtime-{}-{}", exe.dev(), exe.ino()))
}

fn is_readonly_mount(p: &Path) -> bool {
    nix::sys::statvfs::statvfs(p).is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Make sure the read-only view exists; returns its path.
pub fn ensure_sealed() -> Result<PathBuf, SealError> {
    let exe = PathBuf::from("/proc/self/exe");
    let meta = std::fs::metadata(&exe).map_err(|source| SealError::Io {
        action: "stat",
        path: exe.clone(),
        source,
    })?;
    let target = sealed_path(&meta);
    if is_readonly_mount(&target) && std::fs::metadata(&target).is_ok_and(|m| m.ino() == meta.ino()) {
        return Ok(target);
    }
    let dir = Path::new(SEALED_DIR);
    std::fs::create_dir_all(dir).map_err(|source| SealError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    // Two runtimes may race here: serialise on a lock file, then check again.
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| SealError::Io {
            action: "open",
            path: lock_path.clone(),
            source,
        })?;
    // SAFETY: flock on a valid descriptor we own.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    if is_readonly_mount(&target) {
        return Ok(target);
    }
    if !target.exists() {
        std::fs::write(&target, b"").map_err(|source| SealError::Io {
            action: "create",
            path: target.clone(),
            source,
        })?;
    }
    let real = std::fs::read_link(&exe).map_err(|source| SealError::Io {
        action: "read",
        path: exe.clone(),
        source,
    })?;
    mount(Some(&real), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|source| {
        SealError::Os {
            action: "bind-mount",
            path: target.clone(),
            source,
        }
    })?;
    mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|source| SealError::Os {
        action: "remount read-only",
        path: target.clone(),
        source,
    })?;
    Ok(target)
}

/// Re-exec the current command from the sealed binary unless already running from a read-only mount.
/// Returns only if no re-exec was needed (or on error).
pub fn reexec_sealed() -> Result<(), SealError> {
    if running_sealed() || std::env::var_os(REEXEC_MARK).is_some() {
        return Ok(());
    }
    let sealed = ensure_sealed()?;
    let args: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    std::env::set_var(REEXEC_MARK, "1");
    let path = CString::new(sealed.as_os_str().as_bytes()).map_err(|_| SealError::Io {
        action: "exec",
        path: sealed.clone(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let err = nix::unistd::execve(&path, &args, &env)
        .err()
        .unwrap_or(nix::Error::UnknownErrno);
    Err(SealError::Os {
        action: "exec",
        path: sealed,
        source: err,
    })
}

/// Keep other processes (in the container) from opening our /proc/PID/exe until we exec its program.
pub fn make_undumpable() {
    set_dumpable(false);
}

pub fn set_dumpable(on: bool) {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, on as libc::c_ulong, 0, 0, 0) };
}
