//! Linux control groups for one container, on cgroup v1, v2 and hybrid hosts.
//!
//! [`Cgroup::resolve`] turns the OCI `linux.cgroupsPath` into one directory per mounted hierarchy (every v1
//! hierarchy, named ones such as `name=systemd` included, and the unified one). The result is serializable, so
//! later commands reuse it without detecting anything again. Each resource goes to the hierarchy that carries
//! its controller: a v1 hierarchy when one has it, else the unified hierarchy when its root offers it; on a
//! hybrid host both happen side by side (e.g. memory on v1, hugetlb on v2).
//!
//! The files that implement each controller live in `v1/` and `v2/`; `v2_devices` compiles device rules into
//! the BPF program cgroup v2 uses instead of device files.
//!
//! The systemd cgroup driver is emulated on the filesystem (the systemd-style path is created directly); no
//! scope unit is registered with systemd over D-Bus.

mod device_rules;
mod error;
mod fs;
mod layout;
mod path;
mod stats;
mod v1;
mod v2;
mod v2_devices;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use device_rules::default_device_rules;
pub use error::CgroupError;
pub use layout::{hierarchies, layout, Hierarchy, Layout};
pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, CpusetStats, HugetlbStats, IntelRdtStats, MemoryEntry,
    MemoryStats, NetworkInterface, PidsStats, Stats, Throttling,
};
pub use v2::cpu::{shares_to_weight, weight_to_shares};
pub use v2::io::blkio_weight_to_io_weight;

use device_rules::DeviceRule;
use path::CgroupPath;

/// The container's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    /// Whether this is the cgroup v2 unified hierarchy.
    pub unified: bool,
    /// v1: the hierarchy's controllers (["cpu", "cpuacct"], ["name=systemd"]); v2: the controllers its root
    /// offered when the cgroup was resolved.
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// The container's cgroup directory.
    pub path: PathBuf,
}

/// Where one container's cgroup lives in every hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// The cgroup path as resolved ("/vessel/<id>", "/machine.slice/libpod-<id>.scope", or a relative path).
    name: String,
    dirs: Vec<CgroupDir>,
}

/// Where a controller is for this cgroup.
#[derive(Debug, Clone, Copy)]
enum Place<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

/// How long destroy keeps retrying an rmdir the kernel refuses as busy (tasks still exiting).
const RMDIR_BUSY_TIMEOUT: Duration = Duration::from_secs(3);

impl Cgroup {
    /// Resolves `linux.cgroupsPath` (absolute, relative to the runtime's own cgroup, or systemd's
    /// `slice:prefix:name`; `/vessel/<id>` when absent) for container `id` in every mounted hierarchy. Reads
    /// /proc only; changes nothing.
    pub fn resolve(cgroups_path: Option<&Path>, id: &str, systemd: bool) -> Result<Cgroup, CgroupError> {
        let requested = path::resolve_path(cgroups_path, id, systemd)?;
        let own = match requested {
            CgroupPath::Relative(_) => {
                let p = Path::new("/proc/self/cgroup");
                let content = std::fs::read_to_string(p).map_err(|cause| CgroupError::Read {
                    path: p.into(),
                    cause,
                })?;
                layout::parse_proc_cgroup(&content)
            }
            CgroupPath::Absolute(_) => Vec::new(),
        };
        Self::place_in(&requested, layout::hierarchies()?, &own)
    }

    /// Places a resolved path in `hierarchies`; `own` is the parsed /proc/self/cgroup (for relative paths).
    fn place_in(
        requested: &CgroupPath,
        hierarchies: &[Hierarchy],
        own: &[layout::ProcCgroup],
    ) -> Result<Cgroup, CgroupError> {
        let name = match requested {
            CgroupPath::Absolute(p) | CgroupPath::Relative(p) => p.display().to_string(),
        };
        let mut dirs = Vec::with_capacity(hierarchies.len());
        for h in hierarchies {
            let path = match requested {
                CgroupPath::Absolute(p) => h.mount_point.join(p.strip_prefix("/").unwrap_or(p)),
                CgroupPath::Relative(rel) => {
                    let own = layout::own_cgroup(own, h).ok_or_else(|| CgroupError::OwnCgroupUnknown {
                        path: name.clone(),
                        hierarchy: h.label(),
                    })?;
                    // /proc/self/cgroup is relative to the hierarchy root; the mount may show a sub-cgroup.
                    let below_mount = own
                        .strip_prefix(&h.root)
                        .or_else(|_| own.strip_prefix("/"))
                        .unwrap_or(own);
                    h.mount_point.join(below_mount).join(rel)
                }
            };
            dirs.push(CgroupDir {
                unified: h.unified,
                controllers: h.controllers.clone(),
                mount_point: h.mount_point.clone(),
                path,
            });
        }
        Ok(Cgroup { name, dirs })
    }

    /// The cgroup path as resolved, e.g. "/vessel/abc".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's directory in every hierarchy.
    pub fn dirs(&self) -> &[CgroupDir] {
        &self.dirs
    }

    /// The container's directory in the unified (v2) hierarchy, if the host has one.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.dirs.iter().find(|d| d.unified).map(|d| d.path.as_path())
    }

    /// The container's directory in the v1 hierarchy that carries `controller` ("memory", "name=systemd").
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| !d.unified && d.controllers.iter().any(|c| c == controller))
            .map(|d| d.path.as_path())
    }

    /// The layout of the hierarchies this cgroup was resolved in.
    pub fn layout(&self) -> Layout {
        match (
            self.dirs.iter().any(|d| !d.unified),
            self.dirs.iter().any(|d| d.unified),
        ) {
            (true, true) => Layout::Hybrid,
            (false, _) => Layout::V2,
            (true, false) => Layout::V1,
        }
    }

    /// Where the controller named `v1` on cgroup v1 and `v2` on cgroup v2 is: v1 first, as on hybrid hosts a
    /// controller bound to a v1 hierarchy is absent from the unified one.
    fn place(&self, v1: &str, v2: &str) -> Option<Place<'_>> {
        if let Some(d) = self.v1_dir(v1) {
            return Some(Place::V1(d));
        }
        self.dirs
            .iter()
            .find(|d| d.unified && d.controllers.iter().any(|c| c == v2))
            .map(|d| Place::V2(d.path.as_path()))
    }

    fn require(&self, v1: &str, v2: &str, setting: &str) -> Result<Place<'_>, CgroupError> {
        self.place(v1, v2).ok_or_else(|| CgroupError::ControllerMissing {
            setting: setting.to_string(),
            controller: if self.layout() == Layout::V2 {
                v2.to_string()
            } else {
                v1.to_string()
            },
        })
    }

    /// Creates the directory in every hierarchy (with missing parents). On v1 the cpuset cpus/mems are copied
    /// down from the parents; on v2 every ancestor enables the controllers it offers for its children. On
    /// failure the directories created so far are removed again.
    pub fn create(&self) -> Result<(), CgroupError> {
        let mut created = Vec::new();
        let result = self.create_all(&mut created);
        if result.is_err() {
            for dir in created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        result
    }

    fn create_all(&self, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        for d in &self.dirs {
            mkdir_p(&d.mount_point, &d.path, created)?;
            if d.unified {
                v2::create::enable_controllers(&d.mount_point, &d.path);
            } else if d.controllers.iter().any(|c| c == "cpuset") {
                v1::cpuset::prepare(&d.mount_point, &d.path)?;
            }
        }
        Ok(())
    }

    /// Applies the OCI resources. Only what the spec sets is written; a setting whose controller this host
    /// lacks is an error, as is a value the kernel refuses (the error names the file and the value).
    pub fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(cpu) = r.cpu() {
            if v1::cpuset::requested(cpu) {
                match self.require("cpuset", "cpuset", "linux.resources.cpu.cpus/mems")? {
                    Place::V1(d) => v1::cpuset::apply(d, cpu)?,
                    Place::V2(d) => v2::cpu::apply_cpuset(d, cpu)?,
                }
            }
            if v1::cpu::requested(cpu) {
                match self.require("cpu", "cpu", "linux.resources.cpu")? {
                    Place::V1(d) => v1::cpu::apply(d, cpu)?,
                    Place::V2(d) => v2::cpu::apply(d, cpu)?,
                }
            }
        }
        if let Some(m) = r.memory() {
            match self.place("memory", "memory") {
                Some(Place::V1(d)) => v1::memory::apply(d, m)?,
                Some(Place::V2(d)) => v2::memory::apply(d, m)?,
                None if v1::memory::requested(m) => {
                    self.require("memory", "memory", "linux.resources.memory")?;
                }
                None => {}
            }
        }
        if let Some(p) = r.pids() {
            match self.place("pids", "pids") {
                Some(Place::V1(d) | Place::V2(d)) => v1::pids::apply(d, p)?,
                None if v1::pids::requested(p) => {
                    self.require("pids", "pids", "linux.resources.pids")?;
                }
                None => {}
            }
        }
        if let Some(b) = r.block_io() {
            if v1::blkio::requested(b) {
                match self.require("blkio", "io", "linux.resources.blockIO")? {
                    Place::V1(d) => v1::blkio::apply(d, b)?,
                    Place::V2(d) => v2::io::apply(d, b)?,
                }
            }
        }
        if let Some(limits) = r.hugepage_limits().as_ref().filter(|l| !l.is_empty()) {
            match self.require("hugetlb", "hugetlb", "linux.resources.hugepageLimits")? {
                Place::V1(d) => v1::hugetlb::apply(d, limits)?,
                Place::V2(d) => v2::hugetlb::apply(d, limits)?,
            }
        }
        if let Some(net) = r.network() {
            if let Some(class_id) = net.class_id() {
                v1::net::apply_class_id(
                    self.v1_only("net_cls", "linux.resources.network.classID")?,
                    class_id,
                )?;
            }
            if let Some(prios) = net.priorities().as_ref().filter(|p| !p.is_empty()) {
                v1::net::apply_priorities(
                    self.v1_only("net_prio", "linux.resources.network.priorities")?,
                    prios,
                )?;
            }
        }
        if let Some(rdma) = r.rdma().as_ref().filter(|r| !r.is_empty()) {
            match self.require("rdma", "rdma", "linux.resources.rdma")? {
                Place::V1(d) | Place::V2(d) => v1::rdma::apply(d, rdma)?,
            }
        }
        if let Some(devices) = r.devices() {
            let rules = DeviceRule::from_oci_list(devices)?;
            if let Some(d) = self.v1_dir("devices") {
                v1::devices::apply(d, &rules)?;
            } else if let Some(d) = self.unified_dir() {
                v2_devices::apply(d, &rules)?;
            } else {
                self.require("devices", "devices", "linux.resources.devices")?;
            }
        }
        if let Some(unified) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            let dir = self.unified_dir().ok_or_else(|| CgroupError::Unsupported {
                setting: "linux.resources.unified".into(),
                reason: "this host has no cgroup v2 hierarchy".into(),
            })?;
            v2::unified::apply(dir, unified)?;
        }
        Ok(())
    }

    /// The directory of a v1-only controller (net_cls, net_prio).
    fn v1_only(&self, controller: &str, setting: &str) -> Result<&Path, CgroupError> {
        self.v1_dir(controller).ok_or_else(|| CgroupError::Unsupported {
            setting: setting.to_string(),
            reason: format!("the {controller} controller is not mounted (it exists on cgroup v1 only)"),
        })
    }

    /// Moves process `pid` into the cgroup in every hierarchy.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidResource {
                setting: "process id".into(),
                reason: format!("{pid} is not a process id"),
            });
        }
        for d in &self.dirs {
            fs::write(&d.path, "cgroup.procs", pid)?;
        }
        Ok(())
    }

    /// Every process in the cgroup or its descendants, in any hierarchy, sorted. Hierarchies where the cgroup
    /// does not exist contribute nothing.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for d in &self.dirs {
            collect_pids(&d.path, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    /// Where freezing happens: the v1 freezer when mounted, else the v2 core freezer.
    fn freezer(&self) -> Result<Place<'_>, CgroupError> {
        if let Some(d) = self.v1_dir("freezer") {
            return Ok(Place::V1(d));
        }
        self.unified_dir()
            .map(Place::V2)
            .ok_or_else(|| CgroupError::ControllerMissing {
                setting: "freezing the container".into(),
                controller: "freezer".into(),
            })
    }

    /// Freezes every process and waits until the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            Place::V1(d) => v1::freezer::freeze(d),
            Place::V2(d) => v2::freezer::freeze(d),
        }
    }

    /// Thaws the cgroup and waits until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            Place::V1(d) => v1::freezer::thaw(d),
            Place::V2(d) => v2::freezer::thaw(d),
        }
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match self.freezer()? {
            Place::V1(d) => v1::freezer::is_frozen(d),
            Place::V2(d) => v2::freezer::is_frozen(d),
        }
    }

    /// Resource statistics, as in `runc events --stats`.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        let mut s = Stats::default();
        let cpuacct = self.v1_dir("cpuacct");
        if let Some(d) = cpuacct {
            v1::cpu::acct_stats(d, &mut s)?;
        }
        let cpu = self.place("cpu", "cpu");
        match cpu {
            Some(Place::V1(d)) => v1::cpu::stats(d, &mut s)?,
            Some(Place::V2(d)) => v2::cpu::stats(d, &mut s, cpuacct.is_none())?,
            None => {}
        }
        if cpuacct.is_none() && !matches!(cpu, Some(Place::V2(_))) {
            // Every cgroup2 directory reports its CPU usage, with or without the cpu controller.
            if let Some(d) = self.unified_dir() {
                v2::cpu::stats(d, &mut s, true)?;
            }
        }
        match self.place("cpuset", "cpuset") {
            Some(Place::V1(d)) => v1::cpuset::stats(d, &mut s)?,
            Some(Place::V2(d)) => v2::cpu::cpuset_stats(d, &mut s)?,
            None => {}
        }
        match self.place("memory", "memory") {
            Some(Place::V1(d)) => v1::memory::stats(d, &mut s)?,
            Some(Place::V2(d)) => v2::memory::stats(d, &mut s)?,
            None => {}
        }
        if let Some(Place::V1(d) | Place::V2(d)) = self.place("pids", "pids") {
            v1::pids::stats(d, &mut s)?;
        }
        match self.place("blkio", "io") {
            Some(Place::V1(d)) => v1::blkio::stats(d, &mut s)?,
            Some(Place::V2(d)) => v2::io::stats(d, &mut s)?,
            None => {}
        }
        match self.place("hugetlb", "hugetlb") {
            Some(Place::V1(d)) => v1::hugetlb::stats(d, &mut s)?,
            Some(Place::V2(d)) => v2::hugetlb::stats(d, &mut s)?,
            None => {}
        }
        Ok(s)
    }

    /// Removes the cgroup directory, descendants first, in every hierarchy. An rmdir refused as busy is retried
    /// for a few seconds (tasks may still be exiting); a directory already gone is fine. Every hierarchy is
    /// attempted; the first failure is returned. `Ok` means no directory is left.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let mut first_error = None;
        for d in &self.dirs {
            if let Err(e) = remove_tree(&d.path) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A one-line summary for errors and logs.
    pub fn describe(&self) -> String {
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| {
                let label = if d.unified {
                    "unified".to_string()
                } else {
                    d.controllers.join(",")
                };
                format!("{label}={}", d.path.display())
            })
            .collect();
        format!(
            "cgroup {} ({:?} layout: {})",
            self.name,
            self.layout(),
            dirs.join(", ")
        )
    }
}

/// Creates `dir` and its missing parents below `mount_point`, recording each directory it creates.
fn mkdir_p(mount_point: &Path, dir: &Path, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(mount_point).unwrap_or(dir);
    let mut current = mount_point.to_path_buf();
    for component in rel.components() {
        current.push(component);
        match std::fs::create_dir(&current) {
            Ok(()) => created.push(current.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(cause) => return Err(CgroupError::Mkdir { path: current, cause }),
        }
    }
    Ok(())
}

fn collect_pids(dir: &Path, out: &mut BTreeSet<i32>) -> Result<(), CgroupError> {
    let Some(procs) = fs::read_opt(dir, "cgroup.procs")? else {
        return Ok(());
    };
    for line in procs.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid = line
            .parse()
            .map_err(|_| fs::parse_error(dir, "cgroup.procs", format!("'{line}' is not a pid")))?;
        out.insert(pid);
    }
    for child in subdirs(dir)? {
        collect_pids(&child, out)?;
    }
    Ok(())
}

/// The child cgroups of `dir`; none when `dir` is gone.
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(cause) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                cause,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|cause| CgroupError::Read {
            path: dir.to_path_buf(),
            cause,
        })?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    for child in subdirs(dir)? {
        remove_tree(&child)?;
    }
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < RMDIR_BUSY_TIMEOUT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(cause) => {
                let hint = if cause.raw_os_error() == Some(libc::EBUSY) {
                    " (processes are still in the cgroup or one of its children)"
                } else {
                    ""
                };
                return Err(CgroupError::Rmdir {
                    path: dir.to_path_buf(),
                    cause,
                    hint,
                });
            }
        }
    }
}
