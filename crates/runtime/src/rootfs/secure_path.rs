//! Paths inside the container's root that cannot escape it: every lookup goes through openat2(RESOLVE_IN_ROOT),
//! so `..` and symlinks (absolute or relative) resolve as if the rootfs were `/`. Missing components are created
//! one at a time under an already-resolved parent.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while creating one path, like the kernel's own limit.
const MAX_SYMLINKS: u32 = 40;

/// The container's root directory, held open.
pub struct RootDir {
    fd: OwnedFd,
    pub path: PathBuf,
}

/// What to create at the end of a missing path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Dir,
    File,
}

/// `/proc/self/fd/N`: lets path-based syscalls (mount, mknod's parent) act on an fd we resolved safely.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Lexically clean a container path into components relative to the root (`..` stops at the root).
pub fn clean_relative(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn openat2(dirfd: RawFd, rel: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let c = cstr(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    })?;
    // SAFETY: open_how is plain data; zeroing it is a valid initial value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: the path is a valid NUL-terminated string and `how` lives across the call with its size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

impl RootDir {
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let fd = openat2(libc::AT_FDCWD, path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok(RootDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Resolve `p` (a container path) inside the root, following symlinks within it; O_PATH fd.
    pub fn resolve(&self, p: &Path) -> io::Result<OwnedFd> {
        openat2(
            self.fd.as_raw_fd(),
            &clean_relative(p),
            libc::O_PATH,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        )
    }

    /// Resolve `p` without following a symlink in its last component.
    pub fn resolve_nofollow(&self, p: &Path) -> io::Result<OwnedFd> {
        openat2(
            self.fd.as_raw_fd(),
            &clean_relative(p),
            libc::O_PATH | libc::O_NOFOLLOW,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        )
    }

    /// Resolve `p`, creating what is missing (directories on the way, `kind` at the end).
    pub fn ensure(&self, p: &Path, kind: Kind) -> io::Result<OwnedFd> {
        self.ensure_inner(&clean_relative(p), kind, 0)
    }

    fn ensure_inner(&self, rel: &Path, kind: Kind, depth: u32) -> io::Result<OwnedFd> {
        if depth > MAX_SYMLINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        match self.resolve(rel) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let comps: Vec<_> = rel.components().collect();
        let mut prefix = PathBuf::new();
        let mut parent = self.resolve(Path::new(""))?;
        for (i, comp) in comps.iter().enumerate() {
            let name = comp.as_os_str();
            prefix.push(name);
            let last = i + 1 == comps.len();
            match self.resolve(&prefix) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            let cname = cstr(Path::new(name))?;
            let made = if last && kind == Kind::File {
                // SAFETY: valid dirfd and NUL-terminated name; the returned fd is closed right away.
                let fd = unsafe {
                    libc::openat(
                        parent.as_raw_fd(),
                        cname.as_ptr(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                if fd >= 0 {
                    // SAFETY: we own the descriptor just returned.
                    unsafe { libc::close(fd) };
                    0
                } else {
                    -1
                }
            } else {
                // SAFETY: valid dirfd and NUL-terminated name.
                unsafe { libc::mkdirat(parent.as_raw_fd(), cname.as_ptr(), 0o755) }
            };
            if made != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EEXIST) {
                    return Err(err);
                }
                // It exists but does not resolve: a dangling symlink. Follow it by hand, inside the root.
                let target = std::fs::read_link(fd_path(&parent).join(name))?;
                let base = if target.is_absolute() {
                    PathBuf::new()
                } else {
                    prefix.parent().unwrap_or(Path::new("")).to_path_buf()
                };
                let mut next = base.join(target);
                for rest in &comps[i + 1..] {
                    next.push(rest.as_os_str());
                }
                return self.ensure_inner(&clean_relative(&next), kind, depth + 1);
            }
            parent = self.resolve(&prefix)?;
        }
        Ok(parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vessel-sp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root")).unwrap();
        d
    }

    fn real(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(fd_path(fd)).unwrap()
    }

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let d = scratch("escape");
        let root = d.join("root");
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("../outside/x", root.join("dangling")).unwrap();
        let r = RootDir::open(&root).unwrap();
        // An absolute symlink resolves inside the root: "/etc" there does not exist yet, so it is created inside.
        let fd = r.ensure(Path::new("/abs/foo"), Kind::Dir).unwrap();
        assert_eq!(real(&fd), root.join("etc/foo"));
        let fd = r.ensure(Path::new("/up/tmp/y"), Kind::File).unwrap();
        assert_eq!(real(&fd), root.join("tmp/y"));
        let fd = r.ensure(Path::new("/dangling/z"), Kind::Dir).unwrap();
        assert_eq!(real(&fd), root.join("outside/x/z"));
        let fd = r.ensure(Path::new("/../../a/./b/../c"), Kind::Dir).unwrap();
        assert_eq!(real(&fd), root.join("a/c"));
        assert!(!d.join("outside").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlink_loops_are_errors() {
        let d = scratch("loop");
        let root = d.join("root");
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        let r = RootDir::open(&root).unwrap();
        assert!(r.ensure(Path::new("/a/x"), Kind::Dir).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
