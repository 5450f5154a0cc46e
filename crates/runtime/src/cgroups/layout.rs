//! Which cgroup hierarchies this host has, read from /proc/self/mountinfo and cached for the process's life.
//!
//! A v1 hierarchy is a `cgroup` mount whose super options name its controllers (`cpu`, `cpu,cpuacct`,
//! `name=systemd`); the unified hierarchy is the first `cgroup2` mount, whose controllers are those listed in its
//! `cgroup.controllers`. A host is [`Layout::V1`], [`Layout::V2`] or [`Layout::Hybrid`] (both kinds mounted; a
//! controller lives on v1 when a v1 hierarchy has it, else on v2 when the unified root offers it).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::error::CgroupError;

/// The host's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Only cgroup v1 hierarchies.
    V1,
    /// Only the cgroup v2 unified hierarchy.
    V2,
    /// v1 hierarchies and a cgroup2 mount side by side (e.g. Debian/systemd "hybrid", hugetlb-only cgroup2).
    Hybrid,
}

impl Layout {
    /// Classifies a list of hierarchies.
    pub fn of(hierarchies: &[Hierarchy]) -> Result<Layout, CgroupError> {
        let v1 = hierarchies.iter().any(|h| !h.unified);
        let v2 = hierarchies.iter().any(|h| h.unified);
        match (v1, v2) {
            (true, false) => Ok(Layout::V1),
            (false, true) => Ok(Layout::V2),
            (true, true) => Ok(Layout::Hybrid),
            (false, false) => Err(CgroupError::NoHierarchies),
        }
    }
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// Where it is mounted, e.g. /sys/fs/cgroup/cpu,cpuacct or /sys/fs/cgroup.
    pub mount_point: PathBuf,
    /// Which cgroup of the hierarchy the mount shows at its mount point (mountinfo "root"; "/" unless the mount
    /// is a bind of a sub-cgroup, as inside some containers).
    pub root: PathBuf,
    /// v1: the controllers bound to it, in mount-option order (["cpu", "cpuacct"], ["name=systemd"]).
    /// v2: the controllers its root offers (cgroup.controllers), possibly empty.
    pub controllers: Vec<String>,
    /// Whether this is the cgroup2 unified hierarchy.
    pub unified: bool,
}

impl Hierarchy {
    /// Whether this hierarchy carries `controller` (for v1 named hierarchies, pass "name=systemd").
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The super options to mount this hierarchy again (e.g. inside a container): "cpu,cpuacct", "name=systemd",
    /// or "" for cgroup2.
    pub fn mount_options(&self) -> String {
        if self.unified {
            String::new()
        } else {
            self.controllers.join(",")
        }
    }

    /// A short name for messages: "cpu,cpuacct", "name=systemd" or "unified".
    pub fn label(&self) -> String {
        if self.unified {
            "unified".to_string()
        } else {
            self.controllers.join(",")
        }
    }
}

static HIERARCHIES: OnceLock<Vec<Hierarchy>> = OnceLock::new();

/// The cgroup hierarchies mounted in this process's mount namespace, detected once.
pub fn hierarchies() -> Result<&'static [Hierarchy], CgroupError> {
    if let Some(h) = HIERARCHIES.get() {
        return Ok(h);
    }
    let detected = detect()?;
    Ok(HIERARCHIES.get_or_init(|| detected))
}

/// The host's cgroup layout (from the cached [`hierarchies`]).
pub fn layout() -> Result<Layout, CgroupError> {
    Layout::of(hierarchies()?)
}

fn detect() -> Result<Vec<Hierarchy>, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let content = fs::read_to_string(path).map_err(|cause| CgroupError::Read {
        path: path.into(),
        cause,
    })?;
    let mounts = parse_mountinfo(&content);
    let hierarchies = build_hierarchies(&mounts, |mount_point| {
        fs::read_to_string(mount_point.join("cgroup.controllers"))
            .map(|c| c.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    });
    if hierarchies.is_empty() {
        return Err(CgroupError::NoHierarchies);
    }
    Ok(hierarchies)
}

/// One cgroup or cgroup2 line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    pub mount_point: PathBuf,
    pub root: PathBuf,
    pub unified: bool,
    /// v1 controllers named in the super options; empty for cgroup2.
    pub controllers: Vec<String>,
}

/// Super options of a v1 cgroup mount that are not controller names.
const NON_CONTROLLER_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "none",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
    "nofavordynmods",
];

/// Extracts the cgroup mounts from /proc/self/mountinfo text.
pub(crate) fn parse_mountinfo(content: &str) -> Vec<CgroupMount> {
    content.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    // id parent maj:min root mount_point mount_options [optional...] - fstype source super_options
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    if left.len() < 6 {
        return None;
    }
    let fstype = right.next()?;
    let _source = right.next()?;
    let super_options = right.next().unwrap_or("");
    let unified = match fstype {
        "cgroup" => false,
        "cgroup2" => true,
        _ => return None,
    };
    let controllers = if unified {
        Vec::new()
    } else {
        let c: Vec<String> = super_options
            .split(',')
            .filter(|o| !o.is_empty())
            .filter(|o| o.starts_with("name=") || (!o.contains('=') && !NON_CONTROLLER_OPTIONS.contains(o)))
            .map(str::to_string)
            .collect();
        if c.is_empty() {
            return None;
        }
        c
    };
    Some(CgroupMount {
        root: PathBuf::from(unescape(left[3])),
        mount_point: PathBuf::from(unescape(left[4])),
        unified,
        controllers,
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns mounts into hierarchies: the first mount of each v1 controller set and the first cgroup2 mount win
/// (later ones are bind mounts of the same hierarchy). `v2_controllers` reads a cgroup2 mount's cgroup.controllers.
pub(crate) fn build_hierarchies(
    mounts: &[CgroupMount],
    v2_controllers: impl Fn(&Path) -> Vec<String>,
) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in mounts {
        if m.unified {
            if out.iter().any(|h| h.unified) {
                continue;
            }
            out.push(Hierarchy {
                mount_point: m.mount_point.clone(),
                root: m.root.clone(),
                controllers: v2_controllers(&m.mount_point),
                unified: true,
            });
        } else {
            // A controller can be bound to one v1 hierarchy only, so any overlap means the same hierarchy.
            if out
                .iter()
                .any(|h| !h.unified && h.controllers.iter().any(|c| m.controllers.contains(c)))
            {
                continue;
            }
            out.push(Hierarchy {
                mount_point: m.mount_point.clone(),
                root: m.root.clone(),
                controllers: m.controllers.clone(),
                unified: false,
            });
        }
    }
    out
}

/// One line of /proc/<pid>/cgroup: the controllers of the hierarchy (empty for the unified one) and the cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcCgroup {
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

/// Parses /proc/<pid>/cgroup ("hierarchy-id:controllers:path").
pub(crate) fn parse_proc_cgroup(content: &str) -> Vec<ProcCgroup> {
    content
        .lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let _id = it.next()?;
            let controllers = it.next()?;
            let path = it.next()?;
            Some(ProcCgroup {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: PathBuf::from(path),
            })
        })
        .collect()
}

/// Finds the cgroup of `hierarchy` in parsed /proc/<pid>/cgroup entries.
pub(crate) fn own_cgroup<'a>(entries: &'a [ProcCgroup], hierarchy: &Hierarchy) -> Option<&'a Path> {
    entries
        .iter()
        .find(|e| {
            if hierarchy.unified {
                e.controllers.is_empty()
            } else {
                !e.controllers.is_empty()
                    && e.controllers.len() == hierarchy.controllers.len()
                    && e.controllers.iter().all(|c| hierarchy.has(c))
            }
        })
        .map(|e| e.path.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const DEBIAN_V1: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpuset,clone_children
90 80 0:27 / /mnt/bind\\040dir rw,relatime - cgroup cgroup rw,cpu,cpuacct
";

    const PURE_V2: &str = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn no_controllers(_: &Path) -> Vec<String> {
        Vec::new()
    }

    #[test]
    fn hybrid_mountinfo_yields_v1_hierarchies_and_unified() {
        let mounts = parse_mountinfo(HYBRID);
        let h = build_hierarchies(&mounts, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/unified"));
            vec!["hugetlb".to_string()]
        });
        let labels: Vec<String> = h.iter().map(Hierarchy::label).collect();
        assert_eq!(labels, ["cpu", "cpuacct", "memory", "name=systemd", "unified"]);
        assert!(h[4].unified && h[4].has("hugetlb"));
        assert_eq!(Layout::of(&h).unwrap(), Layout::Hybrid);
    }

    #[test]
    fn v1_mountinfo_with_comounts_and_options() {
        let h = build_hierarchies(&parse_mountinfo(DEBIAN_V1), no_controllers);
        assert_eq!(
            h.len(),
            4,
            "the bind mount of cpu,cpuacct is the same hierarchy: {h:?}"
        );
        assert_eq!(h[0].controllers, ["name=systemd"]);
        assert_eq!(h[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(h[1].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h[2].mount_options(), "net_cls,net_prio");
        assert_eq!(
            h[3].controllers,
            ["cpuset"],
            "clone_children is an option, not a controller"
        );
        assert_eq!(Layout::of(&h).unwrap(), Layout::V1);
    }

    #[test]
    fn pure_v2_mountinfo() {
        let h = build_hierarchies(&parse_mountinfo(PURE_V2), |_| vec!["cpu".into(), "memory".into()]);
        assert_eq!(h.len(), 1);
        assert!(h[0].unified);
        assert_eq!(h[0].mount_point, Path::new("/sys/fs/cgroup"));
        assert_eq!(Layout::of(&h).unwrap(), Layout::V2);
    }

    #[test]
    fn no_cgroup_mounts_is_an_error() {
        let h = build_hierarchies(
            &parse_mountinfo("22 1 0:5 / /proc rw - proc proc rw\n"),
            no_controllers,
        );
        assert!(matches!(Layout::of(&h), Err(CgroupError::NoHierarchies)));
    }

    #[test]
    fn unescape_decodes_octal() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trail\\04"), "/trail\\04");
    }

    #[test]
    fn proc_cgroup_matches_hierarchies() {
        let entries =
            parse_proc_cgroup("9:name=systemd:/init.scope\n4:memory:/a/b\n3:cpuacct,cpu:/c\n0::/u\n");
        let h = |c: &[&str], unified| Hierarchy {
            mount_point: "/x".into(),
            root: "/".into(),
            controllers: c.iter().map(|s| s.to_string()).collect(),
            unified,
        };
        assert_eq!(
            own_cgroup(&entries, &h(&["memory"], false)),
            Some(Path::new("/a/b"))
        );
        assert_eq!(
            own_cgroup(&entries, &h(&["cpu", "cpuacct"], false)),
            Some(Path::new("/c"))
        );
        assert_eq!(
            own_cgroup(&entries, &h(&["name=systemd"], false)),
            Some(Path::new("/init.scope"))
        );
        assert_eq!(
            own_cgroup(&entries, &h(&["hugetlb"], true)),
            Some(Path::new("/u"))
        );
        assert_eq!(own_cgroup(&entries, &h(&["pids"], false)), None);
    }
}
