//! The container's root filesystem: propagation, the config's mounts, devices, the switch of root, and the
//! masked / read-only paths that follow it.

mod cgroup_mount;
mod devices;
pub mod mount_options;
mod mounts;
mod paths;
mod pivot;
pub mod secure_path;

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Spec;

use secure_path::RootDir;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("Cannot {action} {path}: {source}")]
    Path {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Cannot mount {source_path} on {dest} ({what}): {errno}")]
    Mount {
        what: String,
        source_path: PathBuf,
        dest: PathBuf,
        errno: nix::Error,
    },
    #[error("Invalid config: {0}")]
    Config(String),
}

impl RootfsError {
    pub fn path(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        RootfsError::Path {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn mount(what: &str, source: &Path, dest: &Path, errno: nix::Error) -> Self {
        RootfsError::Mount {
            what: what.to_string(),
            source_path: source.to_path_buf(),
            dest: dest.to_path_buf(),
            errno,
        }
    }
}

/// Everything the root filesystem set-up needs from the container.
pub struct RootfsContext<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub in_user_ns: bool,
    pub new_cgroup_ns: bool,
}

fn propagation_flag(spec: &Spec) -> Result<Option<MsFlags>, RootfsError> {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
    {
        None | Some("") => Ok(None),
        Some(p) => mount_options::propagation(p)
            .map(Some)
            .ok_or_else(|| RootfsError::Config(format!("unknown rootfsPropagation {p:?}"))),
    }
}

/// Mount everything under the new root, still seeing the host's filesystem (so bind sources resolve there).
pub fn prepare(ctx: &RootfsContext) -> Result<(), RootfsError> {
    let prop = propagation_flag(ctx.spec)?;
    // Nothing we mount may propagate back to the host: slave by default, or what the config asks for.
    // An unbindable root cannot be bound onto itself: that one is applied after the root switch.
    let root_flag = prop
        .filter(|p| !p.contains(MsFlags::MS_UNBINDABLE))
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(None::<&str>, "/", None::<&str>, root_flag, None::<&str>)
        .map_err(|e| RootfsError::mount("propagation", Path::new("/"), Path::new("/"), e))?;
    if prop.is_some_and(|p| p.contains(MsFlags::MS_SHARED)) {
        // pivot_root refuses a shared parent mount of the new root.
        make_parent_mount_private(ctx.rootfs)?;
    }
    mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RootfsError::mount("bind", ctx.rootfs, ctx.rootfs, e))?;
    let root = RootDir::open(ctx.rootfs).map_err(|e| RootfsError::path("open", ctx.rootfs, e))?;
    let linux = ctx.spec.linux().as_ref();
    let mount_ctx = mounts::MountContext {
        bundle: ctx.bundle,
        in_user_ns: ctx.in_user_ns,
        new_cgroup_ns: ctx.new_cgroup_ns,
        mount_label: linux.and_then(|l| l.mount_label().as_deref()),
    };
    let spec_mounts = ctx.spec.mounts().clone().unwrap_or_default();
    for m in &spec_mounts {
        mounts::mount_entry(&root, m, &mount_ctx)?;
    }
    let dev_from_host = spec_mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind"))
    });
    if !dev_from_host {
        let mut nodes = devices::default_devices();
        for d in linux.and_then(|l| l.devices().as_ref()).into_iter().flatten() {
            let node = devices::from_spec(d)?;
            nodes.retain(|n| n.path != node.path);
            nodes.push(node);
        }
        for n in &nodes {
            devices::create(&root, n, ctx.in_user_ns)?;
        }
        let has_devpts = spec_mounts
            .iter()
            .any(|m| m.destination() == Path::new("/dev/pts"));
        devices::create_symlinks(&root, has_devpts)?;
    }
    Ok(())
}

/// Make the root of the container's filesystem the process's root.
pub fn switch_root(rootfs: &Path, no_pivot: bool) -> Result<(), RootfsError> {
    if no_pivot {
        pivot::move_root(rootfs)
    } else {
        pivot::pivot(rootfs)
    }
}

/// After the switch: masked and read-only paths, a read-only root, and the root's propagation.
pub fn finalize(spec: &Spec) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    let label = linux
        .and_then(|l| l.mount_label().as_deref())
        .filter(|_| mounts::selinux_enabled());
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        paths::mask(Path::new(p), label)?;
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        paths::make_readonly(Path::new(p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        paths::remount_readonly(Path::new("/"))?;
    }
    if let Some(prop) = propagation_flag(spec)? {
        mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
            .map_err(|e| RootfsError::mount("propagation", Path::new("/"), Path::new("/"), e))?;
    }
    Ok(())
}

/// Find the mount that holds `rootfs`'s parent directory and make it private.
fn make_parent_mount_private(rootfs: &Path) -> Result<(), RootfsError> {
    let parent = rootfs.parent().unwrap_or(Path::new("/"));
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RootfsError::path("read", Path::new("/proc/self/mountinfo"), e))?;
    let best = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|mp| parent.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"));
    mount(
        None::<&str>,
        &best,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| RootfsError::mount("make private", &best, &best, e))
}
