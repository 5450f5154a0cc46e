//! The `cgroup` mount type: the container sees its own cgroup hierarchies at the destination, on v1, v2 and
//! hybrid hosts alike.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::mount_options::MountOptions;
use super::mounts::remount_bind;
use super::secure_path::{fd_path, Kind, RootDir};
use super::RootfsError;

/// One cgroup hierarchy mounted on the host.
#[derive(Debug, Clone)]
pub struct HostHierarchy {
    pub mount_point: PathBuf,
    /// v1: controller list as in /proc/self/cgroup (`cpu,cpuacct`, `name=systemd`); v2: empty.
    pub controllers: String,
    pub v2: bool,
}

/// Non-controller super options of a v1 cgroup mount.
const NOT_CONTROLLERS: &[&str] = &[
    "rw",
    "ro",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
];

pub fn host_hierarchies() -> Result<Vec<HostHierarchy>, RootfsError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RootfsError::path("read", Path::new("/proc/self/mountinfo"), e))?;
    let mut out: Vec<HostHierarchy> = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = match pre.split(' ').nth(4) {
            Some(p) => PathBuf::from(unescape(p)),
            None => continue,
        };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let super_opts = post.nth(1).unwrap_or("");
        let h = match fstype {
            "cgroup2" => HostHierarchy {
                mount_point,
                controllers: String::new(),
                v2: true,
            },
            "cgroup" => {
                let ctrls: Vec<&str> = super_opts
                    .split(',')
                    .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent="))
                    .collect();
                HostHierarchy {
                    mount_point,
                    controllers: ctrls.join(","),
                    v2: false,
                }
            }
            _ => continue,
        };
        // The same hierarchy can be mounted twice; the first mount wins.
        if !out.iter().any(|o| o.v2 == h.v2 && o.controllers == h.controllers) {
            out.push(h);
        }
    }
    Ok(out)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// This process's cgroup path in the hierarchy with `controllers` ("" for v2).
fn own_path(controllers: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        (ctrls == controllers).then(|| path.to_string())
    })
}

pub fn mount_cgroups(
    root: &RootDir,
    dest: &Path,
    opts: &MountOptions,
    new_cgroup_ns: bool,
) -> Result<(), RootfsError> {
    let hierarchies = host_hierarchies()?;
    let base_flags =
        opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
    let readonly = opts.flags.contains(MsFlags::MS_RDONLY);
    let only_v2 = hierarchies.iter().all(|h| h.v2);
    if only_v2 {
        return mount_one(
            root,
            dest,
            &HostHierarchy {
                mount_point: "/sys/fs/cgroup".into(),
                controllers: String::new(),
                v2: true,
            },
            base_flags,
            readonly,
            new_cgroup_ns,
        );
    }
    let target = root
        .ensure(dest, Kind::Dir)
        .map_err(|e| RootfsError::path("create mount point", dest, e))?;
    mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        base_flags,
        Some("mode=755"),
    )
    .map_err(|e| RootfsError::mount("tmpfs", Path::new("tmpfs"), dest, e))?;
    let host_root = Path::new("/sys/fs/cgroup");
    for h in &hierarchies {
        if h.mount_point.parent() != Some(host_root) {
            continue;
        }
        let name = h.mount_point.file_name().unwrap_or_default();
        mount_one(root, &dest.join(name), h, base_flags, readonly, new_cgroup_ns)?;
    }
    // Co-mounted controllers are reached through symlinks on the host (cpu -> cpu,cpuacct): the same inside.
    if let Ok(entries) = std::fs::read_dir(host_root) {
        let parent = root
            .resolve(dest)
            .map_err(|e| RootfsError::path("resolve", dest, e))?;
        for e in entries.flatten() {
            if let Ok(link) = std::fs::read_link(e.path()) {
                let _ = symlink(&link, fd_path(&parent).join(e.file_name()));
            }
        }
    }
    if readonly {
        remount_bind(root, dest, MsFlags::MS_RDONLY | base_flags, None).or_else(|_| {
            let t = root
                .resolve(dest)
                .map_err(|e| RootfsError::path("resolve", dest, e))?;
            mount(
                None::<&str>,
                &fd_path(&t),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base_flags,
                Some("mode=755"),
            )
            .map_err(|e| RootfsError::mount("remount", dest, dest, e))
        })?;
    }
    Ok(())
}

/// Mount one hierarchy: a fresh cgroup filesystem when the container has its own cgroup namespace (its view is
/// then rooted at its own cgroup), else a bind of its own cgroup directory.
fn mount_one(
    root: &RootDir,
    dest: &Path,
    h: &HostHierarchy,
    flags: MsFlags,
    readonly: bool,
    new_ns: bool,
) -> Result<(), RootfsError> {
    let target = root
        .ensure(dest, Kind::Dir)
        .map_err(|e| RootfsError::path("create mount point", dest, e))?;
    let ro = if readonly {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    if new_ns {
        let (fstype, data) = if h.v2 {
            ("cgroup2", String::new())
        } else if h.controllers.starts_with("name=") {
            ("cgroup", format!("none,{}", h.controllers))
        } else {
            ("cgroup", h.controllers.clone())
        };
        let data = (!data.is_empty()).then_some(data.as_str());
        return mount(Some(fstype), &fd_path(&target), Some(fstype), flags | ro, data)
            .map_err(|e| RootfsError::mount(fstype, Path::new(fstype), dest, e));
    }
    let rel = own_path(&h.controllers).unwrap_or_else(|| "/".into());
    let source = h.mount_point.join(rel.trim_start_matches('/'));
    mount(
        Some(&source),
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RootfsError::mount("bind", &source, dest, e))?;
    remount_bind(root, dest, flags | ro, Some(&source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_has_cgroup_hierarchies() {
        let hs = host_hierarchies().unwrap();
        assert!(!hs.is_empty(), "no cgroup mounts found in /proc/self/mountinfo");
        for h in hs.iter().filter(|h| !h.v2) {
            assert!(
                !h.controllers.is_empty(),
                "v1 hierarchy at {} without controllers",
                h.mount_point.display()
            );
            assert!(!h.controllers.contains("rw"));
        }
    }
}
