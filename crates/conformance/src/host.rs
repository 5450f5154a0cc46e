//! Read-only views of the host: mounts, cgroups, processes, namespaces and kernel features.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone)]
pub struct MountInfo {
    pub id: u32,
    pub parent: u32,
    /// Root of the mount within its filesystem.
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: String,
    /// Optional fields: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`.
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
    /// The raw line, for messages.
    pub line: String,
}

impl MountInfo {
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.split(',').any(|o| o == opt)
    }
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("shared:"))
    }
    pub fn is_slave(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("master:"))
    }
    pub fn is_unbindable(&self) -> bool {
        self.optional.iter().any(|o| o == "unbindable")
    }
}

/// Decodes the octal escapes (`\040` for a space) used in mountinfo fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text (from the host or printed by a container).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut v = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < sep + 4 || sep < 6 {
            continue;
        }
        v.push(MountInfo {
            id: fields[0].parse().unwrap_or(0),
            parent: fields[1].parse().unwrap_or(0),
            root: unescape(fields[3]),
            mount_point: PathBuf::from(unescape(fields[4])),
            options: fields[5].to_string(),
            optional: fields[6..sep].iter().map(|s| s.to_string()).collect(),
            fstype: fields[sep + 1].to_string(),
            source: unescape(fields[sep + 2]),
            super_options: fields[sep + 3].to_string(),
            line: line.to_string(),
        });
    }
    v
}

/// The calling process's mounts.
pub fn mountinfo() -> Vec<MountInfo> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn is_under(p: &Path, dir: &Path) -> bool {
    p == dir || p.starts_with(dir)
}

/// Mount points (in the caller's mount namespace) at or below `dir`.
pub fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|m| is_under(&m.mount_point, dir))
        .map(|m| m.mount_point)
        .collect()
}

/// Mountinfo lines whose mount point or root lies at or below `dir`: what a leaked container mount
/// (a bind of the rootfs, a volume, a propagated mount) looks like from the host.
pub fn mounts_mentioning(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().to_string();
    mountinfo()
        .into_iter()
        .filter(|m| is_under(&m.mount_point, dir) || m.root.starts_with(&d))
        .map(|m| m.line)
        .collect()
}

/// Where each cgroup hierarchy is mounted on the host.
#[derive(Debug, Clone, Default)]
pub struct CgroupMounts {
    /// v1 controller (or `name=systemd`) -> mount point.
    pub v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount, if any.
    pub unified: Option<PathBuf>,
}

impl CgroupMounts {
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1.get(controller).map(|p| p.as_path())
    }

    /// Controllers enabled in the cgroup2 hierarchy (`cgroup.controllers` at its root).
    pub fn v2_controllers(&self) -> Vec<String> {
        self.unified
            .as_ref()
            .and_then(|u| std::fs::read_to_string(u.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }

    /// Distinct hierarchy mount points (v1 ones, then the unified one).
    pub fn hierarchies(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for p in self.v1.values() {
            if !v.contains(p) {
                v.push(p.clone());
            }
        }
        if let Some(u) = &self.unified {
            v.push(u.clone());
        }
        v
    }
}

/// Reads the host's cgroup mounts from mountinfo.
pub fn cgroup_mounts() -> CgroupMounts {
    let mut cm = CgroupMounts::default();
    for m in mountinfo() {
        match m.fstype.as_str() {
            "cgroup" => {
                for opt in m.super_options.split(',') {
                    if opt == "rw" || opt == "ro" || opt.is_empty() || opt == "clone_children" {
                        continue;
                    }
                    if opt.contains('=') && !opt.starts_with("name=") {
                        continue;
                    }
                    cm.v1
                        .entry(opt.to_string())
                        .or_insert_with(|| m.mount_point.clone());
                }
            }
            "cgroup2" if cm.unified.is_none() => {
                cm.unified = Some(m.mount_point.clone());
            }
            _ => {}
        }
    }
    cm
}

/// `/proc/<pid>/cgroup` as (controllers, path); the cgroup2 entry has controllers "".
pub fn proc_cgroups(pid: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?.to_string();
            let path = it.next()?.to_string();
            Some((ctrls, path))
        })
        .collect()
}

/// The host directory of `pid`'s cgroup for a v1 controller, or for the cgroup2 hierarchy when
/// `controller` is "".
pub fn cgroup_dir_of(pid: &str, controller: &str) -> Option<PathBuf> {
    let cm = cgroup_mounts();
    let (mnt, path) = if controller.is_empty() {
        let path = proc_cgroups(pid).into_iter().find(|(c, _)| c.is_empty())?.1;
        (cm.unified?, path)
    } else {
        let path = proc_cgroups(pid)
            .into_iter()
            .find(|(c, _)| c.split(',').any(|x| x == controller))?
            .1;
        (cm.v1_dir(controller)?.to_path_buf(), path)
    };
    Some(mnt.join(path.trim_start_matches('/')))
}

/// Every host directory that a container with this `cgroupsPath` may own: for an absolute path, the path
/// in each hierarchy; for a relative one, the path below this process's own cgroup in each hierarchy.
pub fn cgroup_dirs_for(cgroups_path: &str) -> Vec<PathBuf> {
    let cm = cgroup_mounts();
    let own = proc_cgroups("self");
    let rel = cgroups_path.trim_start_matches('/');
    let mut v = Vec::new();
    for (ctrl, mnt) in &cm.v1 {
        let base = if cgroups_path.starts_with('/') {
            mnt.clone()
        } else {
            let mine = own
                .iter()
                .find(|(c, _)| c.split(',').any(|x| x == ctrl))
                .map(|(_, p)| p.trim_start_matches('/').to_string())
                .unwrap_or_default();
            mnt.join(mine)
        };
        let d = base.join(rel);
        if !v.contains(&d) {
            v.push(d);
        }
    }
    if let Some(u) = &cm.unified {
        let base = if cgroups_path.starts_with('/') {
            u.clone()
        } else {
            let mine = own
                .iter()
                .find(|(c, _)| c.is_empty())
                .map(|(_, p)| p.trim_start_matches('/').to_string())
                .unwrap_or_default();
            u.join(mine)
        };
        v.push(base.join(rel));
    }
    v
}

/// Of [`cgroup_dirs_for`], those that exist now.
pub fn existing_cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    cgroup_dirs_for(cgroups_path)
        .into_iter()
        .filter(|d| d.is_dir())
        .collect()
}

/// Processes (other than zombies) whose cwd or root lies at or below `dir`.
pub fn pids_using(dir: &Path) -> Vec<(i32, String)> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        for what in ["cwd", "root"] {
            if let Ok(t) = std::fs::read_link(format!("/proc/{pid}/{what}")) {
                if is_under(&t, dir) {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    v.push((pid, format!("{comm} ({what} {})", t.display())));
                    break;
                }
            }
        }
    }
    v
}

/// True if `pid` exists and is not a zombie.
pub fn pid_alive(pid: i64) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// `readlink /proc/<pid>/ns/<ns>`, e.g. `net:[4026531840]`.
pub fn ns_link(pid: &str, ns: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The namespace kinds this kernel shows in /proc/self/ns (without the `*_for_children` links).
pub fn ns_kinds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/ns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with("_for_children"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// AppArmor is enabled in the running kernel.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

/// SELinux is enabled in the running kernel.
pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// A `Name:\tvalue` field of a /proc/<pid>/status text.
pub fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim())
    })
}

/// Major and minor number of a block device present on the host (for blkio tests).
pub fn some_block_device() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/partitions").ok()?;
    // Prefer a whole disk (not a partition, not zram/loop/ram) that has a queue directory.
    let mut fallback = None;
    for l in text.lines().skip(2) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 4 {
            continue;
        }
        let (Ok(maj), Ok(min)) = (f[0].parse::<u64>(), f[1].parse::<u64>()) else {
            continue;
        };
        let name = f[3];
        if !Path::new(&format!("/sys/block/{name}")).exists() {
            continue;
        }
        if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram") {
            fallback.get_or_insert((maj, min));
            continue;
        }
        return Some((maj, min));
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n\
                    40 36 0:5 / /proc rw,nosuid - proc proc rw\n\
                    garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].root, "/mnt1");
        assert!(m[0].is_shared() && m[0].is_slave() && !m[0].is_unbindable());
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[0].source, "/dev/root");
        assert!(m[0].has_option("noatime") && !m[0].has_option("ro"));
        assert!(m[1].optional.is_empty() && m[1].has_option("nosuid"));
    }

    #[test]
    fn reads_status_fields() {
        let s = "Name:\tsh\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t1\n";
        assert_eq!(status_field(s, "CapBnd"), Some("00000000a80425fb"));
        assert_eq!(status_field(s, "NoNewPrivs"), Some("1"));
        assert_eq!(status_field(s, "Cap"), None);
    }
}
