//! Network namespaces that outlive their processes: made by vesseld before an instance starts, kept as a
//! bind mount of the namespace file, joined by the runtime through the spec's namespace `path`.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::link::{self, LinkChange};
use crate::netlink::Netlink;
use crate::NetError;

/// nsfs's magic number: what a mounted namespace file reports through statfs.
const NSFS_MAGIC: i64 = 0x6e73_6673;

pub struct NetNs {
    pub path: PathBuf,
    file: File,
}

impl NetNs {
    /// A new namespace with its loopback up, kept at `path` (a regular file is made there).
    pub fn create(path: &Path) -> Result<NetNs, NetError> {
        let err = |what: &str, e: &dyn std::fmt::Display| NetError::Netns {
            path: path.to_path_buf(),
            reason: format!("{what}: {e}"),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err("cannot make its directory", &e))?;
        }
        File::create(path).map_err(|e| err("cannot create the file", &e))?;
        // A thread of its own unshares, so nothing else of vesseld ever runs in the new namespace.
        let made = std::thread::scope(|s| {
            s.spawn(|| -> Result<(), NetError> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| err("unshare", &e))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| err("bind mount", &e))?;
                // Docker's defaults: any port and ping for the instance's own users. Its root, in a user
                // namespace of its own, has no privilege over this namespace (owned by ours), so without
                // these it could not serve on port 80.
                crate::sysctl::write("net/ipv4/ip_unprivileged_port_start", "0")?;
                crate::sysctl::write("net/ipv4/ping_group_range", "0 2147483647")?;
                let mut nl = Netlink::open().map_err(|e| err("netlink", &e))?;
                let lo = link::index("lo").ok_or_else(|| err("loopback", &"missing"))?;
                link::set(
                    &mut nl,
                    lo,
                    LinkChange {
                        up: true,
                        ..Default::default()
                    },
                )
                .map_err(|e| err("loopback up", &e))
            })
            .join()
            .unwrap_or_else(|_| Err(err("thread", &"panicked")))
        });
        if let Err(e) = made {
            let _ = remove(path);
            return Err(e);
        }
        NetNs::open(path)
    }

    /// The namespace kept at `path`.
    pub fn open(path: &Path) -> Result<NetNs, NetError> {
        if !is_namespace(path) {
            return Err(NetError::Netns {
                path: path.to_path_buf(),
                reason: "no network namespace is kept there".into(),
            });
        }
        let file = File::open(path).map_err(|e| NetError::Netns {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(NetNs {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Runs `f` on a thread of its own inside this namespace (the thread ends with it, so the namespace
    /// change never leaks to other work).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> Result<T, NetError> + Send) -> Result<T, NetError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Netns {
                    path: self.path.clone(),
                    reason: format!("setns: {e}"),
                })?;
                f()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetError::Netns {
                    path: self.path.clone(),
                    reason: "the thread configuring it panicked".into(),
                })
            })
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Whether a namespace is mounted at `path`.
pub fn is_namespace(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Unmounts and removes a kept namespace; its links die with it once no process is left inside. Nothing
/// there is not an error.
pub fn remove(path: &Path) -> Result<(), NetError> {
    while is_namespace(path) {
        umount2(path, MntFlags::MNT_DETACH).map_err(|e| NetError::Netns {
            path: path.to_path_buf(),
            reason: format!("unmount: {e}"),
        })?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetError::Netns {
            path: path.to_path_buf(),
            reason: format!("remove: {e}"),
        }),
        _ => Ok(()),
    }
}
