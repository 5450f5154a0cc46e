//! Device nodes in the container's /dev: the defaults every container gets, `linux.devices`, and the
//! standard /dev symlinks.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::secure_path::{fd_path, Kind, RootDir};
use super::RootfsError;

/// A device to create: (path, type, major, minor, mode, uid, gid).
pub struct DeviceNode {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The devices the runtime-spec says every Linux container has.
pub fn default_devices() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DeviceNode {
        path: PathBuf::from("/dev").join(name),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: None,
        gid: None,
    })
    .collect()
}

pub fn from_spec(d: &LinuxDevice) -> Result<DeviceNode, RootfsError> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(RootfsError::Config(format!(
                "device {} has type 'a', which only cgroup rules may use",
                d.path().display()
            )))
        }
    };
    Ok(DeviceNode {
        path: d.path().clone(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid(),
        gid: d.gid(),
    })
}

/// Create one device node. In a user namespace mknod is not allowed: bind the host's node instead.
pub fn create(root: &RootDir, dev: &DeviceNode, bind_from_host: bool) -> Result<(), RootfsError> {
    if !dev.path.is_absolute() || !dev.path.starts_with("/dev") {
        return Err(RootfsError::Config(format!(
            "device path {} is not under /dev",
            dev.path.display()
        )));
    }
    let name = dev
        .path
        .file_name()
        .ok_or_else(|| RootfsError::Config(format!("device path {} has no name", dev.path.display())))?;
    let parent_path = dev.path.parent().unwrap_or(Path::new("/dev"));
    let parent = root
        .ensure(parent_path, Kind::Dir)
        .map_err(|e| RootfsError::path("create", parent_path, e))?;
    let cname = CString::new(name.as_bytes())
        .map_err(|_| RootfsError::Config("device name has a NUL byte".into()))?;
    if bind_from_host {
        let target = root
            .ensure(&dev.path, Kind::File)
            .map_err(|e| RootfsError::path("create", &dev.path, e))?;
        return mount(
            Some(&dev.path),
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| RootfsError::mount("bind", &dev.path, &dev.path, e));
    }
    // A leftover regular file or node from the image is replaced.
    // SAFETY: valid dirfd and NUL-terminated name; failure (ENOENT) is fine.
    unsafe { libc::unlinkat(parent.as_raw_fd(), cname.as_ptr(), 0) };
    let dev_t = makedev(dev.major, dev.minor);
    // SAFETY: valid dirfd (O_PATH directory) and NUL-terminated name.
    let r = unsafe {
        libc::mknodat(
            parent.as_raw_fd(),
            cname.as_ptr(),
            dev.kind.bits() | dev.mode,
            dev_t,
        )
    };
    if r != 0 {
        return Err(RootfsError::path(
            "mknod",
            &dev.path,
            std::io::Error::last_os_error(),
        ));
    }
    let node = fd_path(&parent).join(name);
    // mknod is subject to the umask: set the exact mode the config asked for.
    nix::sys::stat::fchmodat(
        None,
        &node,
        Mode::from_bits_truncate(dev.mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| RootfsError::path("chmod", &dev.path, e.into()))?;
    if dev.uid.is_some() || dev.gid.is_some() {
        nix::unistd::chown(
            &node,
            dev.uid.map(nix::unistd::Uid::from_raw),
            dev.gid.map(nix::unistd::Gid::from_raw),
        )
        .map_err(|e| RootfsError::path("chown", &dev.path, e.into()))?;
    }
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/core and /dev/ptmx → pts/ptmx.
pub fn create_symlinks(root: &RootDir, has_devpts: bool) -> Result<(), RootfsError> {
    let dev = root
        .ensure(Path::new("/dev"), Kind::Dir)
        .map_err(|e| RootfsError::path("create", Path::new("/dev"), e))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    if has_devpts {
        // SAFETY: valid dirfd and a static NUL-terminated name; ENOENT is fine.
        unsafe { libc::unlinkat(dev.as_raw_fd(), c"ptmx".as_ptr(), 0) };
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        let t = CString::new(target).expect("static string");
        let n = CString::new(name).expect("static string");
        // SAFETY: valid dirfd and NUL-terminated strings.
        let r = unsafe { libc::symlinkat(t.as_ptr(), dev.as_raw_fd(), n.as_ptr()) };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(RootfsError::path("symlink", &Path::new("/dev").join(name), err));
            }
        }
    }
    Ok(())
}
