//! The store's lock: shared for readers, exclusive for whoever rewrites the index or collects garbage.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use super::{io_err, Store, StoreError};

/// Held while alive; the lock goes with the descriptor.
pub struct Lock {
    _file: File,
}

fn take(store: &Store, op: libc::c_int) -> Result<Lock, StoreError> {
    let path = store.root().join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(Lock { _file: f });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(io_err("lock", &path)(e));
        }
    }
}

pub fn shared(store: &Store) -> Result<Lock, StoreError> {
    take(store, libc::LOCK_SH)
}

pub fn exclusive(store: &Store) -> Result<Lock, StoreError> {
    take(store, libc::LOCK_EX)
}
