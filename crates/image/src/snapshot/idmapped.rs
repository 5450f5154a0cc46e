//! An overlay root for an instance in its own user namespace: each shared lower layer is seen through an
//! idmapped mount (the image's root-owned files appear owned by the namespace's root, nothing is copied or
//! chowned), and the instance's own upper dir holds host ids of its range, so what it writes is owned by
//! its unprivileged host uid. The idmapped layer mounts are attached only while overlayfs takes its private
//! clones of them, then detached: nothing is left in the mount table but the overlay.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

use super::{mount_snapshot, Snapshot, SnapshotError, UPPER};

const IDMAPPED: &str = "idmapped";

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A detached copy of the mount at `path`, shown through `userns`'s id mapping.
fn idmapped_clone(path: &Path, userns: BorrowedFd) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    // SAFETY: open_tree reads a NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree just returned this descriptor; nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `attr` (size passed) and an empty path relative to the tree descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

fn attach(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let c = c_path(target)?;
    // SAFETY: move_mount reads an empty source path (relative to the tree descriptor) and the target path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Detach idmapped layer mounts a crash left attached under `instance_dir`, and remove their empty dirs.
pub(super) fn detach_staging(instance_dir: &Path) {
    let staging = instance_dir.join(IDMAPPED);
    if !staging.exists() {
        return;
    }
    let mut mounts = super::mounts_under(&staging);
    mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for m in mounts {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
    for e in fs::read_dir(&staging).into_iter().flatten().flatten() {
        let _ = fs::remove_dir(e.path());
    }
    let _ = fs::remove_dir(&staging);
}

/// Like [`mount_snapshot`], with every lower dir idmapped through `userns` (a user namespace whose mapping
/// is the instance's) and the upper dir's root owned by `owner` (the host ids of the namespace's root).
pub fn mount_snapshot_idmapped(
    lowers: &[PathBuf],
    instance_dir: &Path,
    userns: BorrowedFd,
    owner: (u32, u32),
) -> Result<Snapshot, SnapshotError> {
    let staging = instance_dir.join(IDMAPPED);
    let create = |p: &Path| {
        fs::create_dir_all(p).map_err(|source| SnapshotError::Create {
            path: p.into(),
            source,
        })
    };
    create(&staging)?;
    let upper = instance_dir.join(UPPER);
    create(&upper)?;
    std::os::unix::fs::chown(&upper, Some(owner.0), Some(owner.1)).map_err(|source| {
        SnapshotError::Create {
            path: upper.clone(),
            source,
        }
    })?;
    let mut attached: Vec<PathBuf> = Vec::with_capacity(lowers.len());
    let result = (|| {
        for (i, lower) in lowers.iter().enumerate() {
            let target = staging.join(i.to_string());
            create(&target)?;
            let err = |source| SnapshotError::Idmap {
                path: lower.clone(),
                source,
            };
            let tree = idmapped_clone(lower, userns).map_err(err)?;
            attach(&tree, &target).map_err(err)?;
            attached.push(target);
        }
        mount_snapshot(&attached, instance_dir)
    })();
    // The overlay holds private clones of the layers now: the staging mounts can go either way.
    // Never remove_dir_all here: a mount that failed to detach would have the layer's files deleted.
    for target in &attached {
        let _ = umount2(target, MntFlags::MNT_DETACH);
    }
    for i in 0..lowers.len() {
        let _ = fs::remove_dir(staging.join(i.to_string()));
    }
    let _ = fs::remove_dir(&staging);
    result
}
