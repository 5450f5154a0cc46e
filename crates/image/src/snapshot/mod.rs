//! Overlay root filesystems, one per instance: the image's unpacked layers (shared, read-only) as lower dirs,
//! `<instance_dir>/upper` and `<instance_dir>/work` for the instance's own changes, mounted at
//! `<instance_dir>/rootfs`.
//!
//! mount(2) takes its options in one page (4096 bytes here), and `lowerdir=` with absolute paths runs out of
//! it after a few dozen layers. Like containerd and Docker, vessel then shortens the paths: first relative to
//! the layers' common parent directory (`<store>/layers`), then, for even more layers, as descriptor numbers
//! relative to `/proc/self/fd` (each lower dir held open). The working directory is changed only in a
//! short-lived helper thread that has unshared its filesystem attributes (`unshare(CLONE_FS)`), so the rest of
//! the process, a daemon with other threads, never sees it. `/proc/self/mountinfo` then shows the short form.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

mod idmapped;
pub use idmapped::mount_snapshot_idmapped;

/// An instance's mounted overlay root. Dropping it does nothing: [`Snapshot::remove`] unmounts and deletes.
#[derive(Debug)]
pub struct Snapshot {
    pub rootfs: PathBuf,
    instance_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("Cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("Layer directory {path} cannot be used as an overlay lower dir: {source}")]
    Lower { path: PathBuf, source: io::Error },
    #[error("Path {path} cannot be passed to overlayfs: it contains a ',' or a NUL byte")]
    BadPath { path: PathBuf },
    #[error("Too many layers ({count}) for one overlay mount: the mount options exceed {limit} bytes")]
    TooManyLayers { count: usize, limit: usize },
    #[error(
        "Cannot show layer {path} through an idmapped mount (a user namespace of its own needs a kernel and \
         filesystem with idmapped mounts; --userns host does without): {source}"
    )]
    Idmap { path: PathBuf, source: io::Error },
    #[error("{rootfs} is already a mount point")]
    AlreadyMounted { rootfs: PathBuf },
    #[error("Cannot mount the overlay at {rootfs}: {source}")]
    Mount { rootfs: PathBuf, source: io::Error },
    #[error("Cannot unmount {rootfs}: {source}")]
    Unmount { rootfs: PathBuf, source: io::Error },
    #[error("Cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

const UPPER: &str = "upper";
const WORK: &str = "work";
const ROOTFS: &str = "rootfs";
/// The lower dir used for an image without layers (overlayfs needs at least one).
const EMPTY_LOWER: &str = "empty-lower";

/// Mount an overlay of `lowers` (the image's layer dirs, lowest first, as `Store::layer_dirs` returns them)
/// at `<instance_dir>/rootfs`, with `upper/` and `work/` under `instance_dir` (kept if they exist, so an
/// instance's changes survive a remount).
pub fn mount_snapshot(lowers: &[PathBuf], instance_dir: &Path) -> Result<Snapshot, SnapshotError> {
    let create = |p: &Path| {
        fs::create_dir_all(p).map_err(|source| SnapshotError::Create {
            path: p.into(),
            source,
        })
    };
    create(instance_dir)?;
    let instance_dir = fs::canonicalize(instance_dir).map_err(|source| SnapshotError::Create {
        path: instance_dir.into(),
        source,
    })?;
    let (upper, work, rootfs) = (
        instance_dir.join(UPPER),
        instance_dir.join(WORK),
        instance_dir.join(ROOTFS),
    );
    for p in [&upper, &work, &rootfs] {
        create(p)?;
    }
    let snapshot = Snapshot {
        rootfs: rootfs.clone(),
        instance_dir: instance_dir.clone(),
    };
    if snapshot.is_mounted() {
        return Err(SnapshotError::AlreadyMounted { rootfs });
    }
    let mut lowers: Vec<PathBuf> = if lowers.is_empty() {
        let empty = instance_dir.join(EMPTY_LOWER);
        create(&empty)?;
        vec![empty]
    } else {
        let mut v = Vec::with_capacity(lowers.len());
        for l in lowers {
            let real = fs::canonicalize(l).map_err(|source| SnapshotError::Lower {
                path: l.clone(),
                source,
            })?;
            if !real.is_dir() {
                return Err(SnapshotError::Lower {
                    path: l.clone(),
                    source: io::Error::from_raw_os_error(libc::ENOTDIR),
                });
            }
            v.push(real);
        }
        v
    };
    lowers.reverse(); // overlayfs wants the topmost layer first
    for p in lowers.iter().chain([&upper, &work]) {
        if p.as_os_str().as_bytes().iter().any(|b| *b == b',' || *b == 0) {
            return Err(SnapshotError::BadPath { path: p.clone() });
        }
    }
    let limit = page_size() - 1;
    let tail = format!(",upperdir={},workdir={}", escape(&upper), escape(&work));
    let options = |names: &[String]| format!("lowerdir={}{tail}", names.join(":"));
    let mount_err = |source| SnapshotError::Mount {
        rootfs: rootfs.clone(),
        source,
    };

    // 1. Absolute paths.
    let names: Vec<String> = lowers.iter().map(|p| escape(p)).collect();
    let data = options(&names);
    if data.len() <= limit {
        return mount_overlay(None, &data, &rootfs)
            .map(|_| snapshot)
            .map_err(mount_err);
    }
    // 2. Relative to the common parent of the lower dirs.
    let base = common_parent(&lowers);
    if let Some(base) = &base {
        let names: Vec<String> = lowers
            .iter()
            .map(|p| escape(p.strip_prefix(base).unwrap_or(p)))
            .collect();
        let data = options(&names);
        if data.len() <= limit {
            let dir = open_dir(base).map_err(|source| SnapshotError::Lower {
                path: base.clone(),
                source,
            })?;
            return mount_overlay(Some(&dir), &data, &rootfs)
                .map(|_| snapshot)
                .map_err(mount_err);
        }
    }
    // 3. Descriptor numbers relative to /proc/self/fd.
    let fds = lowers
        .iter()
        .map(|p| {
            open_dir(p).map_err(|source| SnapshotError::Lower {
                path: p.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = fds.iter().map(|fd| fd.as_raw_fd().to_string()).collect();
    let data = options(&names);
    if data.len() > limit {
        return Err(SnapshotError::TooManyLayers {
            count: lowers.len(),
            limit,
        });
    }
    let proc_fd = open_dir(Path::new("/proc/self/fd")).map_err(mount_err)?;
    let r = mount_overlay(Some(&proc_fd), &data, &rootfs);
    drop(fds);
    r.map(|_| snapshot).map_err(mount_err)
}

/// Mount points at or under `dir` in this mount namespace (mountinfo's octal escapes decoded).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(p))))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

impl Snapshot {
    /// The snapshot of `instance_dir`, mounted or not (to remove one left by an earlier process).
    pub fn at(instance_dir: &Path) -> Snapshot {
        Snapshot {
            rootfs: instance_dir.join(ROOTFS),
            instance_dir: instance_dir.to_path_buf(),
        }
    }

    /// The directory holding the instance's changes.
    pub fn upper(&self) -> PathBuf {
        self.instance_dir.join(UPPER)
    }

    /// Whether something is mounted at `rootfs` (it is on another device than its parent).
    pub fn is_mounted(&self) -> bool {
        match (
            fs::symlink_metadata(&self.rootfs),
            fs::symlink_metadata(&self.instance_dir),
        ) {
            (Ok(a), Ok(b)) => a.dev() != b.dev(),
            _ => false,
        }
    }

    /// Unmount the overlay (lazily if it is busy) and delete upper, work and the mount point.
    pub fn remove(self) -> Result<(), SnapshotError> {
        let unmount_err = |source| SnapshotError::Unmount {
            rootfs: self.rootfs.clone(),
            source,
        };
        if self.rootfs.exists() {
            match umount2(&self.rootfs, MntFlags::empty()) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(nix::errno::Errno::EBUSY) => {
                    umount2(&self.rootfs, MntFlags::MNT_DETACH).map_err(|e| unmount_err(e.into()))?
                }
                Err(e) => return Err(unmount_err(e.into())),
            }
        }
        if self.is_mounted() {
            return Err(unmount_err(io::Error::from_raw_os_error(libc::EBUSY)));
        }
        // Idmapped layer mounts a crash left attached: detached first, so that no removal below can reach
        // into a shared layer.
        idmapped::detach_staging(&self.instance_dir);
        if let Some(m) = mounts_under(&self.instance_dir).first() {
            return Err(SnapshotError::Unmount {
                rootfs: m.clone(),
                source: io::Error::from_raw_os_error(libc::EBUSY),
            });
        }
        for name in [UPPER, WORK, EMPTY_LOWER] {
            let p = self.instance_dir.join(name);
            match fs::remove_dir_all(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(SnapshotError::Remove { path: p, source }),
            }
        }
        match fs::remove_dir(&self.rootfs) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SnapshotError::Remove {
                path: self.rootfs.clone(),
                source,
            }),
        }
    }
}

fn page_size() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => 4096,
    }
}

/// overlayfs separates lower dirs with ':' and takes '\' as an escape.
fn escape(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == ':' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The deepest directory containing all of `paths` (absolute, canonical), if it is not `/`.
fn common_parent(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut base = paths.first()?.parent()?.to_path_buf();
    for p in paths {
        while !p.starts_with(&base) {
            base = base.parent()?.to_path_buf();
        }
    }
    (base != Path::new("/")).then_some(base)
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        p,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: open just returned this descriptor; nothing else owns it.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// mount -t overlay, with relative lower dirs resolved from `cwd` when given. The working directory is
/// changed only in a helper thread with its own filesystem attributes.
fn mount_overlay(cwd: Option<&OwnedFd>, data: &str, target: &Path) -> io::Result<()> {
    let data = CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let do_mount = || {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(io::Error::from)
    };
    let Some(cwd) = cwd else { return do_mount() };
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
            nix::unistd::fchdir(cwd.as_raw_fd())?;
            do_mount()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("mount helper thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape("/a\\040b\\134c"), b"/a b\\c");
        assert_eq!(unescape("/plain\\9"), b"/plain\\9");
    }

    #[test]
    fn escaping_and_common_parent() {
        assert_eq!(escape(Path::new("/a/sha256:ab\\c")), "/a/sha256\\:ab\\\\c");
        let ps = [
            PathBuf::from("/var/lib/vessel/layers/a"),
            PathBuf::from("/var/lib/vessel/layers/b"),
        ];
        assert_eq!(common_parent(&ps), Some(PathBuf::from("/var/lib/vessel/layers")));
        let ps = [PathBuf::from("/x/layers/a"), PathBuf::from("/x/other/b/c")];
        assert_eq!(common_parent(&ps), Some(PathBuf::from("/x")));
        assert_eq!(common_parent(&[PathBuf::from("/a"), PathBuf::from("/b")]), None);
    }
}
