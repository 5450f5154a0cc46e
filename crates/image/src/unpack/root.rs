//! The unpack target, held open as a directory fd, and the few filesystem primitives the unpacker needs.
//!
//! Every lookup of a path that came out of a layer goes through openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
//! on the target's fd, so `..`, absolute symlinks and relative symlinks all resolve as if the target were `/`
//! (the approach of `vessel-runtime`'s `rootfs/secure_path.rs`). Entries are then created, replaced and removed
//! with *at() syscalls on the resolved parent's fd and a single final name, never following that final name.

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Symlinks followed while creating the missing parents of one path, like the kernel's own limit.
const MAX_SYMLINKS: u32 = 40;
/// Deepest directory tree `remove_all_at` / `clear_dir` will walk (each level holds one fd).
pub(crate) const MAX_REMOVE_DEPTH: u32 = 512;

/// (st_dev, st_ino): identifies what this layer wrote, whatever path reaches it.
pub(crate) type InodeId = (u64, u64);

pub(crate) fn inode_id(st: &FileStat) -> InodeId {
    (st.st_dev, st.st_ino)
}

pub(crate) fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

fn open_in(dirfd: RawFd, rel: &Path, flags: OFlag, resolve: ResolveFlag) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(resolve);
    let fd = openat2(dirfd, rel, how).map_err(errno_io)?;
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A path inside the target as a list of single, validated names (no "", ".", ".." and no '/').
pub(crate) type Components = Vec<OsString>;

pub(crate) fn join(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

/// `/proc/self/fd/<dirfd>/<name>`: lets the xattr calls, which have no *at() form here, act on a name under a
/// parent we resolved safely. The final name is a single component, and the l*xattr calls do not follow it.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: Option<&OsStr>) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if let Some(name) = name {
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
    }
    CString::new(p).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The unpack target.
pub(crate) struct Root {
    fd: OwnedFd,
    /// The target's real path, to turn a resolved fd back into a path inside the target.
    real: PathBuf,
}

impl Root {
    /// Open the target directory itself (a path the caller chose, so it is followed normally).
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = open_in(
            libc::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            ResolveFlag::empty(),
        )?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        Ok(Root { fd, real })
    }

    /// Resolve `rel` inside the target, following symlinks within it, as an fd opened with `flags`.
    pub(crate) fn open_path(&self, rel: &[OsString], flags: OFlag) -> io::Result<OwnedFd> {
        open_in(self.fd.as_raw_fd(), &join(rel), flags, resolve_flags())
    }

    /// Resolve an existing directory (O_PATH) inside the target.
    pub(crate) fn dir(&self, rel: &[OsString]) -> io::Result<OwnedFd> {
        self.open_path(rel, OFlag::O_PATH | OFlag::O_DIRECTORY)
    }

    /// Resolve directory `rel`, creating the missing ones (mode 0755) one at a time under their resolved
    /// parent. A dangling symlink on the way is followed by hand, inside the target. The inodes of created
    /// directories are added to `created`.
    pub(crate) fn ensure_dir(&self, rel: &[OsString], created: &mut HashSet<InodeId>) -> io::Result<OwnedFd> {
        let mut rel: Components = rel.to_vec();
        let mut hops = 0;
        'restart: loop {
            match self.dir(&rel) {
                Ok(fd) => return Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            let mut parent = self.dir(&[])?;
            for i in 0..rel.len() {
                match self.dir(&rel[..=i]) {
                    Ok(fd) => {
                        parent = fd;
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(e),
                }
                let name = rel[i].as_os_str();
                match nix::sys::stat::mkdirat(Some(parent.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
                {
                    Ok(()) => {
                        let st = fstatat(
                            Some(parent.as_raw_fd()),
                            name,
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(errno_io)?;
                        created.insert(inode_id(&st));
                        parent = self.dir(&rel[..=i])?;
                    }
                    Err(Errno::EEXIST) => {
                        // It exists but does not resolve: a dangling symlink. Follow it inside the target.
                        hops += 1;
                        if hops > MAX_SYMLINKS {
                            return Err(errno_io(Errno::ELOOP));
                        }
                        let target =
                            nix::fcntl::readlinkat(Some(parent.as_raw_fd()), name).map_err(errno_io)?;
                        let base = if target.as_bytes().starts_with(b"/") {
                            Vec::new()
                        } else {
                            self.inside(&parent)?
                        };
                        let mut next = lexical(base, target.as_bytes());
                        next.extend(rel[i + 1..].iter().cloned());
                        rel = next;
                        continue 'restart;
                    }
                    Err(e) => return Err(errno_io(e)),
                }
            }
            return Ok(parent);
        }
    }

    /// Where a resolved directory fd is, as components inside the target.
    fn inside(&self, fd: &OwnedFd) -> io::Result<Components> {
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let rest = real
            .strip_prefix(&self.real)
            .map_err(|_| io::Error::from_raw_os_error(libc::EXDEV))?;
        Ok(rest.iter().map(OsStr::to_os_string).collect())
    }
}

/// Apply a symlink target lexically to `base` (components inside the target): `..` stops at the top.
fn lexical(mut base: Components, target: &[u8]) -> Components {
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                base.pop();
            }
            p => base.push(OsString::from_vec(p.to_vec())),
        }
    }
    base
}

pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(errno_io(e)),
    }
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Remove `name` under `dir` whatever it is; a directory with everything below it. Never follows a symlink.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    remove_all_inner(dir, name, 0)
}

fn remove_all_inner(dir: BorrowedFd<'_>, name: &OsStr, depth: u32) -> io::Result<()> {
    match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(errno_io(e)),
    }
    {
        let mut sub = open_dir_nofollow(dir, name)?;
        clear_dir_inner(&mut sub, &|_| false, depth + 1)?;
    }
    match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno_io(e)),
    }
}

/// Open directory `name` under `dir` for listing, refusing a symlink.
pub(crate) fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Dir> {
    Dir::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_io)
}

/// Remove everything in `dir` except entries whose inode `keep` accepts; kept directories are walked too.
pub(crate) fn clear_dir(dir: &mut Dir, keep: &dyn Fn(&FileStat) -> bool) -> io::Result<()> {
    clear_dir_inner(dir, keep, 0)
}

fn clear_dir_inner(dir: &mut Dir, keep: &dyn Fn(&FileStat) -> bool, depth: u32) -> io::Result<()> {
    if depth > MAX_REMOVE_DEPTH {
        return Err(io::Error::other(format!(
            "directory tree deeper than {MAX_REMOVE_DEPTH} levels"
        )));
    }
    let mut names = Vec::new();
    for ent in dir.iter() {
        let ent = ent.map_err(errno_io)?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    // SAFETY: the Dir owns this descriptor and outlives every use of the borrow below.
    let fd = unsafe { BorrowedFd::borrow_raw(dir.as_raw_fd()) };
    for name in names {
        let Some(st) = lstat_at(fd, &name)? else { continue };
        if keep(&st) {
            if is_dir(&st) {
                let mut sub = open_dir_nofollow(fd, &name)?;
                clear_dir_inner(&mut sub, keep, depth + 1)?;
            }
        } else if is_dir(&st) {
            let mut sub = open_dir_nofollow(fd, &name)?;
            clear_dir_inner(&mut sub, &|_| false, depth + 1)?;
            drop(sub);
            match unlinkat(Some(fd.as_raw_fd()), name.as_os_str(), UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(errno_io(e)),
            }
        } else {
            match unlinkat(Some(fd.as_raw_fd()), name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(errno_io(e)),
            }
        }
    }
    Ok(())
}

/// Set an xattr on `name` under `dir` (or on `dir` itself when `name` is None), never following `name`.
pub(crate) fn set_xattr(
    dir: BorrowedFd<'_>,
    name: Option<&OsStr>,
    key: &[u8],
    value: &[u8],
) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    let key = CString::new(key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let r = if name.is_some() {
        // SAFETY: both strings are NUL-terminated and live across the call; value's pointer and length match.
        unsafe { libc::lsetxattr(path.as_ptr(), key.as_ptr(), value.as_ptr().cast(), value.len(), 0) }
    } else {
        // The path is the /proc magic link to `dir` itself: follow it (to `dir`, never further).
        // SAFETY: as above.
        unsafe { libc::setxattr(path.as_ptr(), key.as_ptr(), value.as_ptr().cast(), value.len(), 0) }
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// fsetxattr on an open (non-O_PATH) descriptor.
pub(crate) fn fset_xattr(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let key = CString::new(key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the key is NUL-terminated and lives across the call; value's pointer and length match.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn comps(s: &str) -> Components {
        s.split('/')
            .filter(|c| !c.is_empty())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn lexical_stops_at_the_top() {
        assert_eq!(lexical(comps("a/b"), b"../../../x/./y"), comps("x/y"));
        assert_eq!(lexical(comps("a"), b"b/c"), comps("a/b/c"));
    }

    #[test]
    fn ensure_dir_follows_dangling_symlinks_inside_and_removal_never_follows() {
        let d = std::env::temp_dir().join(format!("vessel-unpack-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("t/real")).unwrap();
        std::fs::create_dir_all(d.join("outside")).unwrap();
        std::fs::write(d.join("outside/keep"), b"k").unwrap();
        symlink("../../outside/new", d.join("t/rel")).unwrap();
        symlink(d.join("outside"), d.join("t/abs")).unwrap();
        let root = Root::open(&d.join("t")).unwrap();
        let mut created = HashSet::new();
        root.ensure_dir(&comps("rel/sub"), &mut created).unwrap();
        assert!(d.join("t/outside/new/sub").is_dir());
        root.ensure_dir(&comps("abs/x"), &mut created).unwrap();
        assert!(d
            .join("t")
            .join(d.strip_prefix("/").unwrap())
            .join("outside/x")
            .is_dir());
        assert_eq!(created.len(), 4 + d.components().count());
        // Removing a symlink to a directory removes the link only.
        let top = root.dir(&[]).unwrap();
        use std::os::fd::AsFd;
        remove_all_at(top.as_fd(), OsStr::new("abs")).unwrap();
        remove_all_at(top.as_fd(), OsStr::new("real")).unwrap();
        assert!(d.join("outside/keep").exists());
        assert!(!d.join("outside/new").exists() && !d.join("t/real").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
