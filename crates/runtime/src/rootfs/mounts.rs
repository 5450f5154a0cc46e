//! Mounting one `mounts[]` entry of the config inside the container's root, with the destination resolved so
//! that no symlink can send it outside.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::Mount;

use super::mount_options::{self, MountOptions};
use super::secure_path::{fd_path, Kind, RootDir};
use super::{cgroup_mount, RootfsError};

/// What a mount needs to know about the container around it.
pub struct MountContext<'a> {
    pub bundle: &'a Path,
    /// The container runs in a new user namespace: some mounts (sysfs, mqueue) need a bind fallback there.
    pub in_user_ns: bool,
    pub new_cgroup_ns: bool,
    pub mount_label: Option<&'a str>,
}

pub fn mount_entry(root: &RootDir, m: &Mount, ctx: &MountContext) -> Result<(), RootfsError> {
    let options = m.options().clone().unwrap_or_default();
    let mut opts = mount_options::parse(&options);
    let typ = m.typ().as_deref().unwrap_or("");
    if typ == "bind" {
        opts.flags.insert(MsFlags::MS_BIND);
    }
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(RootfsError::Config(format!(
            "mount destination {} is not absolute",
            dest.display()
        )));
    }
    if typ == "cgroup" {
        return cgroup_mount::mount_cgroups(root, dest, &opts, ctx.new_cgroup_ns);
    }
    if let (Some(label), true) = (ctx.mount_label, selinux_enabled()) {
        if !label.is_empty() && !opts.is_bind() {
            let ctx_opt = format!("context=\"{label}\"");
            opts.data = if opts.data.is_empty() {
                ctx_opt
            } else {
                format!("{},{ctx_opt}", opts.data)
            };
        }
    }
    if opts.is_bind() {
        let source = source_path(m, ctx.bundle)?;
        bind(root, &source, dest, &opts)?;
    } else {
        let target = root
            .ensure(dest, Kind::Dir)
            .map_err(|e| RootfsError::path("create mount point", dest, e))?;
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        let res = mount(Some(&source), &fd_path(&target), Some(typ), opts.flags, data);
        match res {
            Ok(()) => {}
            // Without its own network namespace a user-namespaced container may not mount sysfs, nor mqueue
            // without its own ipc namespace: bind the host's instead, as other runtimes do.
            Err(nix::Error::EPERM) if ctx.in_user_ns && (typ == "sysfs" || typ == "mqueue") => {
                let host = if typ == "sysfs" { "/sys" } else { "/dev/mqueue" };
                let mut bind_opts = opts.clone();
                bind_opts.flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
                bind(root, Path::new(host), dest, &bind_opts)?;
            }
            Err(e) => return Err(RootfsError::mount(typ, &source, dest, e)),
        }
    }
    apply_propagation(root, dest, &opts)
}

fn source_path(m: &Mount, bundle: &Path) -> Result<PathBuf, RootfsError> {
    let src = m.source().clone().ok_or_else(|| {
        RootfsError::Config(format!(
            "bind mount to {} has no source",
            m.destination().display()
        ))
    })?;
    Ok(if src.is_absolute() { src } else { bundle.join(src) })
}

/// Bind `source` (a host path) onto `dest` (a container path), then remount with the requested flags.
pub fn bind(root: &RootDir, source: &Path, dest: &Path, opts: &MountOptions) -> Result<(), RootfsError> {
    let meta = std::fs::metadata(source).map_err(|e| RootfsError::path("bind mount source", source, e))?;
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    let target = root
        .ensure(dest, kind)
        .map_err(|e| RootfsError::path("create mount point", dest, e))?;
    let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
    mount(Some(source), &fd_path(&target), None::<&str>, flags, None::<&str>)
        .map_err(|e| RootfsError::mount("bind", source, dest, e))?;
    let extra = opts.remount_flags();
    if !extra.is_empty() {
        remount_bind(root, dest, extra, Some(source))?;
    }
    Ok(())
}

/// Remount an existing bind mount with `flags`. If the kernel refuses because the source mount has locked
/// flags (nosuid, nodev, ... set by a less privileged namespace), keep those and try again.
pub fn remount_bind(
    root: &RootDir,
    dest: &Path,
    flags: MsFlags,
    source: Option<&Path>,
) -> Result<(), RootfsError> {
    let target = root
        .resolve(dest)
        .map_err(|e| RootfsError::path("resolve", dest, e))?;
    let path = fd_path(&target);
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(None::<&str>, &path, None::<&str>, base | flags, None::<&str>) {
        Ok(()) => Ok(()),
        Err(nix::Error::EPERM) => {
            let locked = statvfs(source.unwrap_or(&path))
                .map(|s| locked_flags(s.flags()))
                .unwrap_or(MsFlags::empty());
            mount(
                None::<&str>,
                &path,
                None::<&str>,
                base | flags | locked,
                None::<&str>,
            )
            .map_err(|e| RootfsError::mount("remount", dest, dest, e))
        }
        Err(e) => Err(RootfsError::mount("remount", dest, dest, e)),
    }
}

/// Flags of an existing mount that a remount must keep.
pub fn locked_flags(f: FsFlags) -> MsFlags {
    let pairs = [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    pairs
        .iter()
        .filter(|(s, _)| f.contains(*s))
        .fold(MsFlags::empty(), |acc, (_, m)| acc | *m)
}

fn apply_propagation(root: &RootDir, dest: &Path, opts: &MountOptions) -> Result<(), RootfsError> {
    for flag in &opts.propagation {
        let target = root
            .resolve(dest)
            .map_err(|e| RootfsError::path("resolve", dest, e))?;
        mount(None::<&str>, &fd_path(&target), None::<&str>, *flag, None::<&str>)
            .map_err(|e| RootfsError::mount("propagation", dest, dest, e))?;
    }
    Ok(())
}

pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}
