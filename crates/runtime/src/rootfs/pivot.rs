//! Switching the process's root to the container's rootfs: pivot_root, or MS_MOVE + chroot when pivot_root is
//! not possible (`--no-pivot`, an initramfs root).

use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, fchdir, pivot_root};

use super::RootfsError;

pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    let err = |what: &'static str| move |e: nix::Error| RootfsError::path(what, rootfs, e.into());
    let old_root = open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open /"))?;
    let new_root = open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open"))?;
    fchdir(new_root).map_err(err("chdir"))?;
    // pivot_root(".", ".") stacks the old root under the new one; no put_old directory is needed.
    pivot_root(".", ".").map_err(err("pivot_root"))?;
    fchdir(old_root).map_err(err("chdir to old root"))?;
    // Unmounting must not propagate to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("make old root slave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("unmount old root"))?;
    let _ = nix::unistd::close(old_root);
    let _ = nix::unistd::close(new_root);
    chdir("/").map_err(err("chdir /"))
}

pub fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    let err = |what: &'static str| move |e: nix::Error| RootfsError::path(what, rootfs, e.into());
    chdir(rootfs).map_err(err("chdir"))?;
    mount(Some(rootfs), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(err("move to /"))?;
    chroot(".").map_err(err("chroot"))?;
    chdir("/").map_err(err("chdir /"))
}
