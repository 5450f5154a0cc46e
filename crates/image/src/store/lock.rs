//! Locks. `<root>/lock` is taken shared by readers and by blob commits, exclusively by whoever rewrites
//! index.json or collects garbage. Temp files and dirs under `<root>/tmp` are flocked by their writer for
//! as long as it lives, so the cleaner can tell a live writer's file from a crashed one's.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{io_err, StoreError};

/// Held while alive; the lock goes with the descriptor.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock(2) on a descriptor owned by `f` for the duration of the call; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn take(root: &Path, op: libc::c_int) -> Result<Lock, StoreError> {
    let path = root.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    flock(&f, op).map_err(io_err("lock", &path))?;
    Ok(Lock { _file: f })
}

/// For reading the index and blobs, and for adding blobs.
pub fn shared(root: &Path) -> Result<Lock, StoreError> {
    take(root, libc::LOCK_SH)
}

/// For rewriting the index and removing anything.
pub fn exclusive(root: &Path) -> Result<Lock, StoreError> {
    take(root, libc::LOCK_EX)
}

/// Mark a temp file or dir (opened as `f`) as in use by this process until `f` is closed.
pub fn lease(f: &File) -> io::Result<()> {
    flock(f, libc::LOCK_EX | libc::LOCK_NB)
}

/// Whether nobody holds a lease on `path` (its writer is gone). Errors count as "in use".
pub fn abandoned(path: &Path) -> bool {
    let Ok(f) = File::open(path) else { return false };
    flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_tell_live_from_abandoned() {
        let dir = std::env::temp_dir().join(format!("vessel-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let f = File::create(&p).unwrap();
        lease(&f).unwrap();
        assert!(!abandoned(&p));
        drop(f);
        assert!(abandoned(&p));
        let d = File::open(&dir).unwrap();
        lease(&d).unwrap();
        assert!(!abandoned(&dir));
        drop(d);
        assert!(abandoned(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
