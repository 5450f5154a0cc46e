//! The jail's cgroups, on cgroup v1, v2 or both (hybrid hosts).
//!
//! A limit `CONTROLLER.FILE=VALUE` goes to the v1 hierarchy that carries the controller, else to
//! the unified (v2) hierarchy when its root offers the controller (enabled on the way down
//! through `cgroup.subtree_control`). In each hierarchy used, and always in the unified one when
//! mounted, the jail gets `<mount>/<parent>/<id>`; its first process joins them all.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("Cannot read the cgroup mounts (/proc/self/mountinfo, /proc/cgroups): {0}")]
    Mounts(std::io::Error),
    #[error("No cgroup hierarchy on this host has the {0} controller")]
    NoController(String),
    #[error("Cgroup {0} already exists: is a VM with this id running? (vessel-jailer --remove cleans up after one)")]
    InUse(PathBuf),
    #[error("Cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io { what, path, source }
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq)]
struct Hierarchy {
    mount: PathBuf,
    /// v1: its controllers; v2: those its root offers.
    controllers: Vec<String>,
    unified: bool,
}

/// The hierarchies in a mountinfo text (first mount of each); `known` lists the kernel's
/// controllers (/proc/cgroups), to tell them from other mount options.
fn parse_mountinfo(text: &str, known: &[&str]) -> Vec<Hierarchy> {
    let mut found: Vec<Hierarchy> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let (fstype, options) = (right.next(), right.nth(1).unwrap_or(""));
        let hierarchy = match fstype {
            Some("cgroup2") => Hierarchy {
                mount: PathBuf::from(mount),
                controllers: Vec::new(),
                unified: true,
            },
            Some("cgroup") => Hierarchy {
                mount: PathBuf::from(mount),
                controllers: options
                    .split(',')
                    .filter(|o| known.contains(o))
                    .map(str::to_owned)
                    .collect(),
                unified: false,
            },
            _ => continue,
        };
        let same = |h: &Hierarchy| h.unified == hierarchy.unified && h.controllers == hierarchy.controllers;
        if !found.iter().any(same) {
            found.push(hierarchy);
        }
    }
    found
}

fn hierarchies() -> Result<Vec<Hierarchy>, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mounts)?;
    let cgroups = std::fs::read_to_string("/proc/cgroups").map_err(CgroupError::Mounts)?;
    let known: Vec<&str> = cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut all = parse_mountinfo(&text, &known);
    for h in all.iter_mut().filter(|h| h.unified) {
        h.controllers = std::fs::read_to_string(h.mount.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
    }
    Ok(all)
}

/// The jail's cgroup directories (one per hierarchy used).
#[derive(Debug, Default)]
pub(super) struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Creates `<parent>/<id>` where `limits` need it and writes them; on failure removes what
    /// it created.
    pub fn create(parent: &str, id: &str, limits: &[(String, String)]) -> Result<Self, CgroupError> {
        let all = hierarchies()?;
        let mut cgroups = Cgroups::default();
        match cgroups.fill(&all, parent, id, limits) {
            Ok(()) => Ok(cgroups),
            Err(e) => {
                cgroups.remove();
                Err(e)
            }
        }
    }

    fn fill(
        &mut self,
        all: &[Hierarchy],
        parent: &str,
        id: &str,
        limits: &[(String, String)],
    ) -> Result<(), CgroupError> {
        let mut placed: Vec<(&Hierarchy, &str, &str)> = Vec::new();
        for (key, value) in limits {
            let controller = key.split('.').next().unwrap_or(key);
            let hierarchy = all
                .iter()
                .find(|h| !h.unified && h.controllers.iter().any(|c| c == controller))
                .or_else(|| {
                    all.iter()
                        .find(|h| h.unified && h.controllers.iter().any(|c| c == controller))
                })
                .ok_or_else(|| CgroupError::NoController(controller.to_owned()))?;
            placed.push((hierarchy, key, value));
        }
        let mut used: Vec<&Hierarchy> = Vec::new();
        for (h, _, _) in &placed {
            if !used.contains(h) {
                used.push(h);
            }
        }
        // The unified hierarchy always gets one: where v2 tools (and systemd) look.
        if !used.iter().any(|h| h.unified) {
            used.extend(all.iter().find(|h| h.unified));
        }
        for h in &used {
            let dir = h.mount.join(parent).join(id);
            if dir.exists() {
                return Err(CgroupError::InUse(dir));
            }
            let parent_dir = h.mount.join(parent);
            if !parent_dir.is_dir() {
                std::fs::create_dir(&parent_dir).map_err(io_err("create cgroup", &parent_dir))?;
            }
            if h.unified {
                let wanted: Vec<&str> = placed
                    .iter()
                    .filter(|(p, _, _)| p == h)
                    .filter_map(|(_, key, _)| key.split('.').next())
                    .collect();
                for controller in wanted {
                    let line = format!("+{controller}");
                    for at in [&h.mount, &parent_dir] {
                        let file = at.join("cgroup.subtree_control");
                        std::fs::write(&file, &line).map_err(io_err("enable a controller in", &file))?;
                    }
                }
            }
            std::fs::create_dir(&dir).map_err(io_err("create cgroup", &dir))?;
            self.dirs.push(dir.clone());
            if h.controllers.iter().any(|c| c == "cpuset") && !h.unified {
                inherit_cpuset(&parent_dir, &dir)?;
            }
        }
        for (h, key, value) in placed {
            let file = h.mount.join(parent).join(id).join(key);
            std::fs::write(&file, value).map_err(io_err("write the limit", &file))?;
        }
        Ok(())
    }

    /// Moves the calling process into every cgroup ("0" names the writer, whatever its PID
    /// namespace).
    pub fn join(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let file = dir.join("cgroup.procs");
            std::fs::write(&file, "0").map_err(io_err("join", &file))?;
        }
        Ok(())
    }

    /// Removes the cgroups (waiting briefly for exiting processes to leave them).
    pub fn remove(&self) {
        for dir in self.dirs.iter().rev() {
            remove_dir_patiently(dir);
        }
    }
}

fn remove_dir_patiently(dir: &Path) {
    for _ in 0..100 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => return,
        }
    }
}

/// A new v1 cpuset cgroup starts with no CPUs or memory nodes: give it its parent's.
fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut from = parent.to_path_buf();
        let value = loop {
            let value = std::fs::read_to_string(from.join(file)).unwrap_or_default();
            if !value.trim().is_empty() || !from.pop() {
                break value;
            }
        };
        let path = dir.join(file);
        std::fs::write(&path, value.trim()).map_err(io_err("write", &path))?;
    }
    Ok(())
}

/// `--remove`: deletes `<parent>/<id>` in every hierarchy that has it.
pub(super) fn remove_named(parent: &str, id: &str) -> Result<(), CgroupError> {
    for h in hierarchies()? {
        let dir = h.mount.join(parent).join(id);
        if dir.is_dir() {
            remove_dir_patiently(&dir);
            if dir.is_dir() {
                return Err(io_err("remove cgroup", &dir)(std::io::Error::from_raw_os_error(
                    libc::EBUSY,
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_mountinfo_gives_v1_controllers_and_the_unified_mount() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 25 0:27 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
34 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
35 25 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 25 0:32 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
40 25 0:40 / /run/other rw - tmpfs tmpfs rw
";
        let known = ["cpu", "cpuacct", "memory", "pids", "net_cls"];
        let found = parse_mountinfo(text, &known);
        assert_eq!(found.len(), 5);
        assert!(found[0].unified);
        assert_eq!(found[1].controllers, Vec::<String>::new());
        assert_eq!(found[2].controllers, ["cpu", "cpuacct"]);
        assert_eq!(found[3].mount, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(found[4].controllers, ["pids"]);
    }

    #[test]
    fn pure_v2_mountinfo_is_one_unified_hierarchy() {
        let text = "\
25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
40 25 0:40 / /run rw - tmpfs tmpfs rw
";
        let found = parse_mountinfo(text, &["cpu", "memory", "pids"]);
        let unified = Hierarchy {
            mount: PathBuf::from("/sys/fs/cgroup"),
            controllers: Vec::new(),
            unified: true,
        };
        assert_eq!(found, [unified]);
    }

    /// On this machine's own cgroups, whatever their layout: hybrid on the dev host, pure
    /// cgroup v2 when scripts/lab-cgroup-v2 runs it (`<unit tests> jail::cgroup`).
    #[test]
    fn a_jail_cgroup_takes_its_limit_and_a_process_then_goes_away() {
        let parent = format!("vessel-test-jail-{}", std::process::id());
        let limits = [("pids.max".to_owned(), "32".to_owned())];
        let cgroups = Cgroups::create(&parent, "vm", &limits).unwrap();
        let limited: Vec<&PathBuf> = cgroups
            .dirs
            .iter()
            .filter(|d| std::fs::read_to_string(d.join("pids.max")).is_ok_and(|v| v.trim() == "32"))
            .collect();
        assert_eq!(limited.len(), 1, "pids.max=32 in one of {:?}", cgroups.dirs);
        let unified = hierarchies().unwrap().into_iter().find(|h| h.unified);
        if let Some(unified) = unified {
            assert!(
                cgroups.dirs.iter().any(|d| d.starts_with(&unified.mount)),
                "the unified hierarchy gets the jail too: {:?}",
                cgroups.dirs
            );
        }
        assert!(matches!(
            Cgroups::create(&parent, "vm", &limits),
            Err(CgroupError::InUse(_))
        ));

        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        for dir in &cgroups.dirs {
            std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        }
        let membership = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        let inside = membership
            .lines()
            .filter(|l| l.ends_with(&format!("/{parent}/vm")))
            .count();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(inside, cgroups.dirs.len(), "{membership}");

        cgroups.remove();
        for dir in &cgroups.dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
            let _ = std::fs::remove_dir(dir.parent().unwrap());
        }
    }
}
