//! Which namespaces a container creates and which it joins, and the order the joins must happen in.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("Cannot open {kind} namespace {path}: {source}")]
    Open {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Cannot join {kind} namespace {path}: {source}")]
    Join {
        kind: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("Namespace {0} is listed twice")]
    Duplicate(&'static str),
    #[error("{path} is not a {kind} namespace")]
    WrongType { kind: &'static str, path: PathBuf },
}

pub fn kind_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// An existing namespace to join, opened before any namespace changes (paths resolve in the runtime's view).
pub struct Joined {
    pub kind: LinuxNamespaceType,
    pub path: PathBuf,
    pub file: File,
}

impl Joined {
    pub fn open(kind: LinuxNamespaceType, path: &Path) -> Result<Joined, NamespaceError> {
        let file = File::open(path).map_err(|source| NamespaceError::Open {
            kind: kind_name(kind),
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Joined {
            kind,
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn join(&self) -> Result<(), NamespaceError> {
        setns(self.file.as_fd(), clone_flag(self.kind)).map_err(|source| {
            if source == nix::Error::EINVAL {
                NamespaceError::WrongType {
                    kind: kind_name(self.kind),
                    path: self.path.clone(),
                }
            } else {
                NamespaceError::Join {
                    kind: kind_name(self.kind),
                    path: self.path.clone(),
                    source,
                }
            }
        })
    }
}

/// The container's namespace plan.
pub struct Plan {
    /// Namespaces to create.
    pub new: Vec<LinuxNamespaceType>,
    /// Namespaces to join, in the order to join them (user first, mount last).
    pub joined: Vec<Joined>,
}

/// Join order: the user namespace first (it grants the rights for the others), mount last (it changes how
/// every later path resolves).
fn join_rank(t: LinuxNamespaceType) -> u8 {
    match t {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Mount => 9,
        _ => 5,
    }
}

impl Plan {
    pub fn from_spec(list: &[LinuxNamespace]) -> Result<Plan, NamespaceError> {
        let mut new = Vec::new();
        let mut joined = Vec::new();
        let mut seen = Vec::new();
        for ns in list {
            let t = ns.typ();
            if seen.contains(&t) {
                return Err(NamespaceError::Duplicate(kind_name(t)));
            }
            seen.push(t);
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => joined.push(Joined::open(t, p)?),
                _ => new.push(t),
            }
        }
        joined.sort_by_key(|j| join_rank(j.kind));
        Ok(Plan { new, joined })
    }

    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        self.new.contains(&t)
    }

    pub fn joins(&self, t: LinuxNamespaceType) -> bool {
        self.joined.iter().any(|j| j.kind == t)
    }

    /// Whether the container gets any mount namespace of its own (new or joined).
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.creates(t) || self.joins(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let b = LinuxNamespaceBuilder::default().typ(t);
        match path {
            Some(p) => b.path(p).build().unwrap(),
            None => b.build().unwrap(),
        }
    }

    #[test]
    fn joins_are_ordered_user_first_mount_last() {
        let list = vec![
            ns(LinuxNamespaceType::Mount, Some("/proc/self/ns/mnt")),
            ns(LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
            ns(LinuxNamespaceType::User, Some("/proc/self/ns/user")),
            ns(LinuxNamespaceType::Pid, None),
        ];
        let plan = Plan::from_spec(&list).unwrap();
        let kinds: Vec<_> = plan.joined.iter().map(|j| j.kind).collect();
        assert_eq!(
            kinds,
            vec![
                LinuxNamespaceType::User,
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Mount
            ]
        );
        assert!(plan.creates(LinuxNamespaceType::Pid));
    }

    #[test]
    fn duplicates_and_missing_paths_are_errors() {
        let dup = vec![
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Pid, None),
        ];
        assert!(matches!(
            Plan::from_spec(&dup),
            Err(NamespaceError::Duplicate("pid"))
        ));
        let missing = vec![ns(LinuxNamespaceType::Network, Some("/nonexistent/ns"))];
        assert!(matches!(
            Plan::from_spec(&missing),
            Err(NamespaceError::Open { .. })
        ));
    }
}
