//! OCI whiteouts: `.wh.<name>` hides `<name>` of lower layers, `.wh..wh..opq` hides everything lower layers put
//! in its directory. In overlay mode they become what overlayfs reads (a 0:0 character device, the
//! `trusted.overlay.opaque` xattr); in flat mode they delete.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;

use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::{mknodat, Mode, SFlag};

use super::entry::Unpacker;
use super::root::{self, errno_io, inode_id};
use super::{Mode as UnpackMode, UnpackError};

pub(crate) const PREFIX: &[u8] = b".wh.";
/// AUFS bookkeeping names (`.wh..wh.plnk`, `.wh..wh.aufs`, ...): ignored, except the opaque marker.
const META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn missing(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// Apply the whiteout entry `comps` (its last component starts with `.wh.`).
pub(crate) fn apply(u: &mut Unpacker<'_>, comps: &[OsString], shown: &str) -> Result<(), UnpackError> {
    let Some((last, dir)) = comps.split_last() else {
        return Err(u.invalid(shown, "empty whiteout name"));
    };
    let last = last.as_bytes();
    if last == OPAQUE {
        return opaque(u, dir, shown);
    }
    if last.starts_with(META_PREFIX) {
        return Ok(());
    }
    let name = OsStr::from_bytes(&last[PREFIX.len()..]);
    if name.is_empty() || name == "." || name == ".." {
        return Err(u.invalid(shown, "whiteout of an invalid name"));
    }
    match u.opts.mode {
        UnpackMode::Flat => {
            let parent = match u.root.dir(dir) {
                Ok(fd) => fd,
                Err(e) if missing(&e) => return Ok(()),
                Err(e) => return Err(u.io(shown, "resolve its directory", e)),
            };
            root::remove_all_at(parent.as_fd(), name)
                .map_err(|e| u.io(shown, "delete the whited-out entry", e))
        }
        UnpackMode::Overlay => {
            let parent = u
                .root
                .ensure_dir(dir, &mut u.created)
                .map_err(|e| u.io(shown, "resolve its directory", e))?;
            root::remove_all_at(parent.as_fd(), name)
                .map_err(|e| u.io(shown, "remove the existing entry", e))?;
            mknodat(Some(parent.as_raw_fd()), name, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|e| u.io(shown, "create the overlay whiteout device", errno_io(e)))
        }
    }
}

fn opaque(u: &mut Unpacker<'_>, dir: &[OsString], shown: &str) -> Result<(), UnpackError> {
    match u.opts.mode {
        UnpackMode::Flat => {
            let fd = match u.root.open_path(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if missing(&e) => return Ok(()),
                Err(e) => return Err(u.io(shown, "open its directory", e)),
            };
            let mut d = Dir::from(fd).map_err(|e| u.io(shown, "open its directory", errno_io(e)))?;
            let created = &u.created;
            root::clear_dir(&mut d, &|st| created.contains(&inode_id(st)))
                .map_err(|e| u.io(shown, "clear the opaque directory", e))
        }
        UnpackMode::Overlay => {
            let fd = u
                .root
                .ensure_dir(dir, &mut u.created)
                .map_err(|e| u.io(shown, "resolve its directory", e))?;
            root::set_xattr(fd.as_fd(), None, OVERLAY_OPAQUE_XATTR.as_bytes(), b"y")
                .map_err(|e| u.io(shown, "mark the directory opaque (trusted.overlay.opaque)", e))
        }
    }
}
