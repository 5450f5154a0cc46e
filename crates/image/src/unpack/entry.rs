//! One tar entry at a time onto the target: names checked, parents resolved inside the target, the entry
//! created with *at() syscalls relative to the resolved parent, then ownership, xattrs, mode and mtime.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, fstat, mknodat, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};
use tar::EntryType;

use super::root::{self, errno_io, inode_id, is_dir, lstat_at, Components, InodeId, Root};
use super::whiteout;
use super::{Mode as UnpackMode, UnpackError, UnpackOptions};

/// Longest entry name, link name or symlink target accepted (PATH_MAX).
const MAX_PATH: usize = 4096;
/// Longest single name (NAME_MAX).
const MAX_NAME: usize = 255;

/// Split an entry name into components: a leading `/`, empty and `.` components are ignored; `..` is refused.
pub(crate) fn split_path(raw: &[u8]) -> Result<Components, String> {
    if raw.len() > MAX_PATH {
        return Err(format!("name longer than {MAX_PATH} bytes"));
    }
    if raw.contains(&0) {
        return Err("name contains a NUL byte".into());
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("name contains a '..' component".into()),
            p if p.len() > MAX_NAME => return Err(format!("a component is longer than {MAX_NAME} bytes")),
            p => out.push(OsString::from_vec(p.to_vec())),
        }
    }
    Ok(out)
}

/// What the header (and PAX records) say about an entry besides its name and type.
pub(crate) struct Meta {
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: TimeSpec,
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Xattrs a layer may not set: they would change how overlayfs reads the layer.
fn reserved_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += i64::from(c.to_digit(10)?) * 10i64.pow(8 - i as u32);
    }
    Some(if neg {
        TimeSpec::new(
            -secs - i64::from(nanos > 0),
            (1_000_000_000 - nanos) % 1_000_000_000,
        )
    } else {
        TimeSpec::new(secs, nanos)
    })
}

/// A directory whose mode and mtime are set once everything inside it is written.
struct DeferredDir {
    path: Components,
    mode: u32,
    mtime: TimeSpec,
}

pub(crate) struct Unpacker<'a> {
    pub(crate) root: &'a Root,
    layer: &'a str,
    pub(crate) opts: &'a UnpackOptions,
    same_owner: bool,
    /// Flat mode: inodes this layer wrote (or kept), which an opaque whiteout in it must not delete.
    pub(crate) created: HashSet<InodeId>,
    dirs: Vec<DeferredDir>,
    entries: u64,
}

impl<'a> Unpacker<'a> {
    pub(crate) fn new(root: &'a Root, layer: &'a str, opts: &'a UnpackOptions) -> Unpacker<'a> {
        Unpacker {
            root,
            layer,
            opts,
            same_owner: nix::unistd::geteuid().is_root(),
            created: HashSet::new(),
            dirs: Vec::new(),
            entries: 0,
        }
    }

    pub(crate) fn invalid(&self, path: &str, reason: impl Into<String>) -> UnpackError {
        UnpackError::Invalid {
            layer: self.layer.to_string(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(&self, path: &str, op: &'static str, source: io::Error) -> UnpackError {
        UnpackError::Io {
            layer: self.layer.to_string(),
            path: path.to_string(),
            op,
            source,
        }
    }

    fn read_err(&self, source: io::Error) -> UnpackError {
        UnpackError::Read {
            layer: self.layer.to_string(),
            source,
        }
    }

    fn track(&mut self, st: &nix::sys::stat::FileStat) {
        if self.opts.mode == UnpackMode::Flat {
            self.created.insert(inode_id(st));
        }
    }

    /// Apply one entry.
    pub(crate) fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > self.opts.max_entries {
            return Err(UnpackError::Limit {
                layer: self.layer.to_string(),
                what: "number of entries",
                limit: self.opts.max_entries,
            });
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let mut kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return self.drain(entry);
        }
        // Old (v7) archives mark directories only by a trailing slash.
        if kind == EntryType::Regular && raw.ends_with(b"/") {
            kind = EntryType::Directory;
        }
        let comps = split_path(&raw).map_err(|r| self.invalid(&shown, r))?;
        if let Some(last) = comps.last() {
            if last.as_bytes().starts_with(whiteout::PREFIX) {
                self.drain(entry)?;
                return whiteout::apply(self, &comps, &shown);
            }
        }
        if comps.is_empty() && kind != EntryType::Directory {
            return Err(self.invalid(&shown, "only a directory may name the top of the layer"));
        }
        let meta = self.meta(entry, &shown)?;
        match kind {
            EntryType::Regular | EntryType::Continuous => self.file(entry, &comps, &meta, &shown)?,
            EntryType::Directory => self.dir(&comps, &meta, &shown)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                self.symlink(&comps, &target, &meta, &shown)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                self.hardlink(&comps, &target, &shown)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, dev) = if kind == EntryType::Fifo {
                    // Writers leave a fifo's device fields empty or zero: they mean nothing.
                    (SFlag::S_IFIFO, 0)
                } else {
                    let h = entry.header();
                    let num = |r: io::Result<Option<u32>>, what: &str| {
                        r.map(|v| v.unwrap_or(0))
                            .map_err(|e| self.invalid(&shown, format!("bad device {what}: {e}")))
                    };
                    let major = num(h.device_major(), "major")?;
                    let minor = num(h.device_minor(), "minor")?;
                    let sflag = if kind == EntryType::Char {
                        SFlag::S_IFCHR
                    } else {
                        SFlag::S_IFBLK
                    };
                    (sflag, libc::makedev(major, minor))
                };
                self.node(&comps, sflag, dev, &meta, &shown)?;
            }
            EntryType::GNUSparse => {
                return Err(self.invalid(&shown, "sparse files are not supported in layers"))
            }
            other => {
                return Err(self.invalid(
                    &shown,
                    format!("unsupported entry type {:?}", other.as_byte() as char),
                ))
            }
        }
        self.drain(entry)
    }

    /// Skip what is left of an entry's data (so the tar reader only reads headers itself).
    fn drain<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        io::copy(entry, &mut io::sink())
            .map(drop)
            .map_err(|e| self.read_err(e))
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta, UnpackError> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| self.invalid(shown, format!("bad {what} in header: {e}"));
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v != u32::MAX)
                .ok_or_else(|| self.invalid(shown, format!("{what} {v} out of range")))
        };
        let uid = id(h.uid().map_err(|e| bad("uid", e))?, "uid")?;
        let gid = id(h.gid().map_err(|e| bad("gid", e))?, "gid")?;
        let mut mtime = TimeSpec::new(
            i64::try_from(h.mtime().map_err(|e| bad("mtime", e))?).unwrap_or(i64::MAX),
            0,
        );
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| self.read_err(e))? {
            for ext in pax {
                let ext = ext.map_err(|e| self.invalid(shown, format!("bad PAX record: {e}")))?;
                let key = ext.key_bytes();
                if key == b"mtime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        mtime = t;
                    }
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if !reserved_xattr(name) && !name.is_empty() {
                        xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// The resolved parent of `comps` (created if missing) and the final name.
    pub(crate) fn parent<'c>(
        &mut self,
        comps: &'c [OsString],
        shown: &str,
    ) -> Result<(OwnedFd, &'c OsStr), UnpackError> {
        let (name, dir) = comps
            .split_last()
            .ok_or_else(|| self.invalid(shown, "empty name"))?;
        let fd = self
            .root
            .ensure_dir(dir, &mut self.created)
            .map_err(|e| self.io(shown, "resolve its parent directory", e))?;
        Ok((fd, name.as_os_str()))
    }

    /// Make room for a new entry: remove what is there (a directory with its contents) unless `keep_dir` and
    /// it is a directory, which is then returned.
    fn make_room(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        keep_dir: bool,
        shown: &str,
    ) -> Result<Option<nix::sys::stat::FileStat>, UnpackError> {
        match lstat_at(parent, name).map_err(|e| self.io(shown, "inspect the existing entry", e))? {
            None => Ok(None),
            Some(st) if keep_dir && is_dir(&st) => Ok(Some(st)),
            Some(_) => {
                root::remove_all_at(parent, name)
                    .map_err(|e| self.io(shown, "remove the existing entry", e))?;
                Ok(None)
            }
        }
    }

    fn chown_at(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        if !self.same_owner {
            return Ok(());
        }
        fchownat(
            Some(parent.as_raw_fd()),
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io(shown, "set its owner", errno_io(e)))
    }

    /// Set the entry's xattrs; a filesystem or name that does not take them (ENOTSUP, EPERM) is skipped,
    /// as containerd does.
    fn xattrs(
        &self,
        meta: &Meta,
        set: impl Fn(&[u8], &[u8]) -> io::Result<()>,
        shown: &str,
    ) -> Result<(), UnpackError> {
        for (k, v) in &meta.xattrs {
            match set(k, v) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {}
                Err(e) => return Err(self.io(shown, "set an extended attribute", e)),
            }
        }
        Ok(())
    }

    fn utimes_at(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        t: TimeSpec,
        shown: &str,
    ) -> Result<(), UnpackError> {
        nix::sys::stat::utimensat(
            Some(parent.as_raw_fd()),
            name,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.io(shown, "set its mtime", errno_io(e)))
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        comps: &[OsString],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let (parent, name) = self.parent(comps, shown)?;
        self.make_room(parent.as_fd(), name, false, shown)?;
        let fd = nix::fcntl::openat(
            Some(parent.as_raw_fd()),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.io(shown, "create the file", errno_io(e)))?;
        // SAFETY: openat just returned this descriptor; nothing else owns it.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let size = entry.size();
        let mut buf = vec![0u8; 128 << 10];
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_err(e)),
            };
            file.write_all(&buf[..n])
                .map_err(|e| self.io(shown, "write the file", e))?;
            written += n as u64;
        }
        if written != size {
            return Err(self.read_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry {shown:?} truncated: {written} of {size} bytes"),
            )));
        }
        let fd = file.as_fd();
        if self.same_owner {
            fchown(
                fd.as_raw_fd(),
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| self.io(shown, "set its owner", errno_io(e)))?;
        }
        self.xattrs(meta, |k, v| root::fset_xattr(fd, k, v), shown)?;
        // After chown, which clears setuid and setgid.
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(meta.mode))
            .map_err(|e| self.io(shown, "set its mode", errno_io(e)))?;
        nix::sys::stat::futimens(fd.as_raw_fd(), &meta.mtime, &meta.mtime)
            .map_err(|e| self.io(shown, "set its mtime", errno_io(e)))?;
        let st = fstat(fd.as_raw_fd()).map_err(|e| self.io(shown, "stat the file", errno_io(e)))?;
        self.track(&st);
        Ok(())
    }

    fn dir(&mut self, comps: &[OsString], meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        let (parent, name): (OwnedFd, &OsStr) = if comps.is_empty() {
            let top = self
                .root
                .dir(&[])
                .map_err(|e| self.io(shown, "open the target", e))?;
            (top, OsStr::new("."))
        } else {
            self.parent(comps, shown)?
        };
        if self.make_room(parent.as_fd(), name, true, shown)?.is_none() {
            nix::sys::stat::mkdirat(Some(parent.as_raw_fd()), name, Mode::from_bits_truncate(0o700))
                .map_err(|e| self.io(shown, "create the directory", errno_io(e)))?;
        }
        self.chown_at(parent.as_fd(), name, meta, shown)?;
        self.xattrs(
            meta,
            |k, v| root::set_xattr(parent.as_fd(), Some(name), k, v),
            shown,
        )?;
        let st = lstat_at(parent.as_fd(), name)
            .map_err(|e| self.io(shown, "stat the directory", e))?
            .ok_or_else(|| self.io(shown, "stat the directory", errno_io(Errno::ENOENT)))?;
        self.track(&st);
        self.dirs.push(DeferredDir {
            path: comps.to_vec(),
            mode: meta.mode,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn symlink(
        &mut self,
        comps: &[OsString],
        target: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        if target.is_empty() || target.len() >= MAX_PATH || target.contains(&0) {
            return Err(self.invalid(shown, "symlink target is empty, too long or contains a NUL byte"));
        }
        let (parent, name) = self.parent(comps, shown)?;
        self.make_room(parent.as_fd(), name, false, shown)?;
        symlinkat(OsStr::from_bytes(target), Some(parent.as_raw_fd()), name)
            .map_err(|e| self.io(shown, "create the symlink", errno_io(e)))?;
        self.chown_at(parent.as_fd(), name, meta, shown)?;
        self.xattrs(
            meta,
            |k, v| root::set_xattr(parent.as_fd(), Some(name), k, v),
            shown,
        )?;
        self.utimes_at(parent.as_fd(), name, meta.mtime, shown)?;
        if let Ok(Some(st)) = lstat_at(parent.as_fd(), name) {
            self.track(&st);
        }
        Ok(())
    }

    fn hardlink(&mut self, comps: &[OsString], target: &[u8], shown: &str) -> Result<(), UnpackError> {
        let src = split_path(target).map_err(|r| self.invalid(shown, format!("hard link target: {r}")))?;
        let (src_name, src_dir) = src
            .split_last()
            .ok_or_else(|| self.invalid(shown, "hard link without a target"))?;
        let missing = || {
            self.invalid(
                shown,
                format!(
                    "hard link target {:?} does not exist in the layer",
                    String::from_utf8_lossy(target)
                ),
            )
        };
        let src_parent = match self.root.dir(src_dir) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Err(missing())
            }
            Err(e) => return Err(self.io(shown, "resolve the hard link target", e)),
        };
        let src_st = lstat_at(src_parent.as_fd(), src_name)
            .map_err(|e| self.io(shown, "inspect the hard link target", e))?
            .ok_or_else(missing)?;
        if is_dir(&src_st) {
            return Err(self.invalid(shown, "hard link target is a directory"));
        }
        let (parent, name) = self.parent(comps, shown)?;
        if let Some(st) =
            lstat_at(parent.as_fd(), name).map_err(|e| self.io(shown, "inspect the existing entry", e))?
        {
            if inode_id(&st) == inode_id(&src_st) {
                return Ok(());
            }
            root::remove_all_at(parent.as_fd(), name)
                .map_err(|e| self.io(shown, "remove the existing entry", e))?;
        }
        linkat(
            Some(src_parent.as_raw_fd()),
            src_name.as_os_str(),
            Some(parent.as_raw_fd()),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| self.io(shown, "create the hard link", errno_io(e)))?;
        self.track(&src_st);
        Ok(())
    }

    fn node(
        &mut self,
        comps: &[OsString],
        kind: SFlag,
        dev: libc::dev_t,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let (parent, name) = self.parent(comps, shown)?;
        self.make_room(parent.as_fd(), name, false, shown)?;
        mknodat(
            Some(parent.as_raw_fd()),
            name,
            kind,
            Mode::from_bits_truncate(0o600),
            dev,
        )
        .map_err(|e| self.io(shown, "create the device or fifo", errno_io(e)))?;
        self.chown_at(parent.as_fd(), name, meta, shown)?;
        self.xattrs(
            meta,
            |k, v| root::set_xattr(parent.as_fd(), Some(name), k, v),
            shown,
        )?;
        // The node was just made by mknodat, so the name is not a symlink to follow.
        fchmodat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| self.io(shown, "set its mode", errno_io(e)))?;
        self.utimes_at(parent.as_fd(), name, meta.mtime, shown)?;
        if let Ok(Some(st)) = lstat_at(parent.as_fd(), name) {
            self.track(&st);
        }
        Ok(())
    }

    /// Set the deferred directory modes and mtimes; returns the number of entries applied.
    pub(crate) fn finish(self) -> Result<u64, UnpackError> {
        for d in &self.dirs {
            let shown = String::from_utf8_lossy(root::join(&d.path).as_os_str().as_bytes()).into_owned();
            let (dir, name) = match d.path.split_last() {
                Some((name, dir)) => (dir, name.as_os_str()),
                None => (&d.path[..], OsStr::new(".")),
            };
            // Replaced or removed by a later entry: nothing to do.
            let Ok(parent) = self.root.dir(dir) else { continue };
            match lstat_at(parent.as_fd(), name) {
                Ok(Some(st)) if is_dir(&st) => {}
                _ => continue,
            }
            fchmodat(
                Some(parent.as_raw_fd()),
                name,
                Mode::from_bits_truncate(d.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| self.io(&shown, "set its mode", errno_io(e)))?;
            self.utimes_at(parent.as_fd(), name, d.mtime, &shown)?;
        }
        Ok(self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_and_checked() {
        let c = |s: &str| split_path(s.as_bytes());
        assert_eq!(
            c("/a//b/./c/").unwrap(),
            vec![OsString::from("a"), "b".into(), "c".into()]
        );
        assert_eq!(c("./").unwrap(), Vec::<OsString>::new());
        assert!(c("../x").is_err());
        assert!(c("a/../../x").is_err());
        assert!(split_path(b"a\0b").is_err());
        assert!(c(&"x".repeat(256)).is_err());
        assert!(c(&"a/".repeat(3000)).is_err());
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.5").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"12").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (12, 0));
        let t = parse_pax_time(b"-1.25").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 750_000_000));
        assert!(parse_pax_time(b"abc").is_none());
    }
}
