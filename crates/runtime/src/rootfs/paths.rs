//! Masked and read-only paths, applied after the root switch.

use std::path::Path;

use nix::mount::{mount, MsFlags};

use super::mounts::locked_flags;
use super::RootfsError;

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Hide a path: an empty read-only tmpfs over a directory, /dev/null over anything else.
pub fn mask(path: &Path, label: Option<&str>) -> Result<(), RootfsError> {
    if !exists(path) {
        return Ok(());
    }
    let res = if path.is_dir() {
        let data = label
            .filter(|l| !l.is_empty())
            .map(|l| format!("context=\"{l}\""));
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            data.as_deref(),
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    match res {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(RootfsError::mount("mask", path, path, e)),
    }
}

/// Make a path read-only: bind it onto itself and remount read-only, keeping its other flags.
pub fn make_readonly(path: &Path) -> Result<(), RootfsError> {
    if !exists(path) {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RootfsError::mount("bind", path, path, e))?;
    remount_readonly(path)
}

pub fn remount_readonly(path: &Path) -> Result<(), RootfsError> {
    let keep = nix::sys::statvfs::statvfs(path)
        .map(|s| locked_flags(s.flags()))
        .unwrap_or(MsFlags::empty());
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| RootfsError::mount("remount read-only", path, path, e))
}
