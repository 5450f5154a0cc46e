//! Tests of [`Cgroup`]: placing paths in hierarchies (no privileges), and, as root, the life of real cgroups on
//! this host: create, apply and read back, add a process, freeze and thaw, statistics, destroy. Each root test
//! uses its own `/vessel-test-<pid>-<n>` cgroup, removed by a Drop guard even when an assertion fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxNetworkBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder,
};

use super::device_rules::{DevKind, DeviceRule, ACC_ALL, ACC_READ};
use super::layout::{parse_proc_cgroup, ProcCgroup};
use super::path::CgroupPath;
use super::test_support::{require_root, Gated, TestCgroup};
use super::*;

const MIB: i64 = 1024 * 1024;

fn hierarchy(mount: &str, controllers: &[&str], unified: bool) -> Hierarchy {
    Hierarchy {
        mount_point: mount.into(),
        root: "/".into(),
        controllers: controllers.iter().map(|s| s.to_string()).collect(),
        unified,
    }
}

fn hybrid() -> Vec<Hierarchy> {
    vec![
        hierarchy("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"], false),
        hierarchy("/sys/fs/cgroup/memory", &["memory"], false),
        hierarchy("/sys/fs/cgroup/systemd", &["name=systemd"], false),
        hierarchy("/sys/fs/cgroup/unified", &["hugetlb"], true),
    ]
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

fn resources(f: impl FnOnce(LinuxResourcesBuilder) -> LinuxResourcesBuilder) -> LinuxResources {
    f(LinuxResourcesBuilder::default()).build().unwrap()
}

fn device(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access.to_string());
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().unwrap()
}

// ---- placement, no privileges ----

#[test]
fn absolute_path_is_placed_under_every_mount() {
    let cg = Cgroup::place_in(
        &CgroupPath::Absolute("/machine.slice/libpod-x.scope".into()),
        &hybrid(),
        &[],
    )
    .unwrap();
    let paths: Vec<&Path> = cg.dirs().iter().map(|d| d.path.as_path()).collect();
    assert_eq!(
        paths,
        [
            Path::new("/sys/fs/cgroup/cpu,cpuacct/machine.slice/libpod-x.scope"),
            Path::new("/sys/fs/cgroup/memory/machine.slice/libpod-x.scope"),
            Path::new("/sys/fs/cgroup/systemd/machine.slice/libpod-x.scope"),
            Path::new("/sys/fs/cgroup/unified/machine.slice/libpod-x.scope"),
        ]
    );
    assert_eq!(cg.name(), "/machine.slice/libpod-x.scope");
    assert_eq!(cg.layout(), Layout::Hybrid);
    assert!(
        cg.describe()
            .contains("memory=/sys/fs/cgroup/memory/machine.slice/libpod-x.scope"),
        "{}",
        cg.describe()
    );
}

#[test]
fn relative_path_is_placed_below_the_own_cgroup_of_each_hierarchy() {
    let own = parse_proc_cgroup(
        "5:name=systemd:/user.slice\n4:memory:/runtime/a\n3:cpu,cpuacct:/\n0::/sess.scope\n",
    );
    let mut hs = hybrid();
    // A mount that shows only a sub-cgroup (as inside a container without a cgroup namespace).
    hs[1].root = "/runtime".into();
    let cg = Cgroup::place_in(&CgroupPath::Relative("c1".into()), &hs, &own).unwrap();
    let paths: Vec<&Path> = cg.dirs().iter().map(|d| d.path.as_path()).collect();
    assert_eq!(
        paths,
        [
            Path::new("/sys/fs/cgroup/cpu,cpuacct/c1"),
            Path::new("/sys/fs/cgroup/memory/a/c1"),
            Path::new("/sys/fs/cgroup/systemd/user.slice/c1"),
            Path::new("/sys/fs/cgroup/unified/sess.scope/c1"),
        ]
    );
}

#[test]
fn relative_path_without_own_entry_is_an_error() {
    let own: Vec<ProcCgroup> = parse_proc_cgroup("4:memory:/a\n");
    let e = Cgroup::place_in(&CgroupPath::Relative("c1".into()), &hybrid(), &own)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("Cannot resolve relative cgroups path 'c1'"), "{e}");
    assert!(e.contains("cpu,cpuacct"), "{e}");
}

#[test]
fn controllers_are_found_on_v1_first_then_on_the_unified_hierarchy() {
    let cg = Cgroup::place_in(&CgroupPath::Absolute("/x".into()), &hybrid(), &[]).unwrap();
    assert!(
        matches!(cg.place("memory", "memory"), Some(Place::V1(p)) if p == Path::new("/sys/fs/cgroup/memory/x"))
    );
    assert!(matches!(cg.place("cpuacct", "cpu"), Some(Place::V1(_))));
    assert!(
        matches!(cg.place("hugetlb", "hugetlb"), Some(Place::V2(p)) if p == Path::new("/sys/fs/cgroup/unified/x"))
    );
    assert!(cg.place("blkio", "io").is_none());
    assert_eq!(
        cg.v1_dir("name=systemd"),
        Some(Path::new("/sys/fs/cgroup/systemd/x"))
    );
    assert_eq!(cg.unified_dir(), Some(Path::new("/sys/fs/cgroup/unified/x")));
}

#[test]
fn cgroup_round_trips_through_json() {
    let cg = Cgroup::place_in(&CgroupPath::Absolute("/vessel/abc".into()), &hybrid(), &[]).unwrap();
    let json = serde_json::to_string(&cg).unwrap();
    let back: Cgroup = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cg);
}

#[test]
fn settings_without_a_controller_are_clear_errors() {
    // Nothing is written before these checks fail, so fake mount points are fine.
    let cg = Cgroup::place_in(&CgroupPath::Absolute("/x".into()), &hybrid(), &[]).unwrap();
    let net = LinuxNetworkBuilder::default().class_id(7u32).build().unwrap();
    let e = cg.apply(&resources(|b| b.network(net))).unwrap_err().to_string();
    assert_eq!(e, "Cannot apply linux.resources.network.classID: the net_cls controller is not mounted (it exists on cgroup v1 only)");

    let pids = LinuxPidsBuilder::default().limit(10).build().unwrap();
    let e = cg.apply(&resources(|b| b.pids(pids))).unwrap_err().to_string();
    assert_eq!(
        e,
        "Cannot apply linux.resources.pids: the cgroup controller 'pids' is not available on this host"
    );
    // "No limit" needs no controller.
    let no_limit = LinuxPidsBuilder::default().limit(-1).build().unwrap();
    cg.apply(&resources(|b| b.pids(no_limit))).unwrap();

    let v1_only = Cgroup::place_in(&CgroupPath::Absolute("/x".into()), &hybrid()[..3], &[]).unwrap();
    let unified = HashMap::from([("memory.max".to_string(), "1".to_string())]);
    let e = v1_only
        .apply(&resources(|b| b.unified(unified)))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "Cannot apply linux.resources.unified: this host has no cgroup v2 hierarchy"
    );
}

// ---- this host, as root ----

#[test]
fn detected_hierarchies_agree_with_proc_cgroups() {
    let hs = hierarchies().expect("detect hierarchies");
    let layout = layout().unwrap();
    eprintln!(
        "layout {layout:?}: {}",
        hs.iter()
            .map(|h| format!("{}={}", h.label(), h.mount_point.display()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // /proc/cgroups: name, hierarchy id (0 = not bound to a v1 hierarchy), number of cgroups, enabled.
    let proc_cgroups = std::fs::read_to_string("/proc/cgroups").unwrap();
    let bound: HashMap<String, u32> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?))
        })
        .collect();
    for h in hs {
        assert!(
            h.mount_point.is_dir(),
            "{} is not a directory",
            h.mount_point.display()
        );
        if h.unified {
            let offered = std::fs::read_to_string(h.mount_point.join("cgroup.controllers")).unwrap();
            assert_eq!(h.controllers, offered.split_whitespace().collect::<Vec<_>>());
            for c in &h.controllers {
                assert!(
                    !hs.iter().any(|o| !o.unified && o.has(c)),
                    "{c} is on v1 and v2 at once"
                );
                if let Some(&id) = bound.get(c) {
                    assert_eq!(
                        id, 0,
                        "{c} is offered by cgroup2 but /proc/cgroups binds it to v1 hierarchy {id}"
                    );
                }
            }
        } else {
            for c in h.controllers.iter().filter(|c| !c.starts_with("name=")) {
                assert!(
                    bound.get(c).is_some_and(|&id| id != 0),
                    "{c} is mounted as v1 but /proc/cgroups disagrees"
                );
            }
        }
    }
    let expected = match (hs.iter().any(|h| !h.unified), hs.iter().any(|h| h.unified)) {
        (true, true) => Layout::Hybrid,
        (true, false) => Layout::V1,
        _ => Layout::V2,
    };
    assert_eq!(layout, expected);
    // The hybrid case this host is set up for: hugetlb unbound from v1 must be found on cgroup2.
    if layout == Layout::Hybrid && bound.get("hugetlb") == Some(&0) {
        let unified = hs.iter().find(|h| h.unified).unwrap();
        assert!(
            unified.has("hugetlb"),
            "hugetlb is on no v1 hierarchy but {} does not offer it",
            unified.mount_point.display()
        );
    }
}

#[test]
fn relative_path_resolves_below_this_process_cgroups() {
    let cg = Cgroup::resolve(Some(Path::new("rel-child")), "id", false).unwrap();
    let own = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
    for (d, h) in cg.dirs().iter().zip(hierarchies().unwrap()) {
        let mine = super::layout::own_cgroup(&own, h).unwrap();
        let expected = h
            .mount_point
            .join(mine.strip_prefix("/").unwrap())
            .join("rel-child");
        assert_eq!(d.path, expected);
    }
}

/// Where a setting was written, for reading it back: (place, file name).
fn file_for<'a>(cg: &'a Cgroup, v1: (&str, &'a str), v2: (&str, &'a str)) -> (PathBuf, &'a str) {
    match cg.place(v1.0, v2.0) {
        Some(Place::V1(d)) => (d.to_path_buf(), v1.1),
        Some(Place::V2(d)) => (d.to_path_buf(), v2.1),
        None => panic!(
            "no {} / {} controller on this host ({})",
            v1.0,
            v2.0,
            cg.describe()
        ),
    }
}

#[test]
fn lifecycle_on_this_host() {
    let t = TestCgroup::new();
    let cg = &t.cg;
    eprintln!("{}", cg.describe());
    for d in cg.dirs() {
        assert!(d.path.is_dir(), "create left {} missing", d.path.display());
    }
    if let Some(d) = cg.v1_dir("cpuset") {
        assert!(
            !read(d, "cpuset.cpus").is_empty(),
            "v1 cpuset.cpus was not copied from the parent"
        );
        assert!(
            !read(d, "cpuset.mems").is_empty(),
            "v1 cpuset.mems was not copied from the parent"
        );
    }

    // What this host can take.
    let (mem_dir, _) = file_for(cg, ("memory", ""), ("memory", ""));
    let swap_file = if cg.v1_dir("memory").is_some() {
        "memory.memsw.limit_in_bytes"
    } else {
        "memory.swap.max"
    };
    let swap_accounting = mem_dir.join(swap_file).exists();
    let huge_2mb = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    let blkio_weight_file = match cg.place("blkio", "io") {
        Some(Place::V1(d)) | Some(Place::V2(d)) => {
            ["blkio.weight", "blkio.bfq.weight", "io.bfq.weight", "io.weight"]
                .into_iter()
                .find(|f| d.join(f).exists())
                .map(|f| (d.to_path_buf(), f))
        }
        None => None,
    };

    let mut devices = vec![device(false, LinuxDeviceType::A, None, None, "rwm")];
    devices.extend(default_device_rules());
    let mut memory = LinuxMemoryBuilder::default()
        .limit(64 * MIB)
        .swappiness(30u64)
        .kernel_tcp(256 * MIB)
        .disable_oom_killer(true);
    if swap_accounting {
        memory = memory.swap(128 * MIB);
    }
    let r = resources(|mut b| {
        b = b
            .memory(memory.build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(32).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .burst(10_000u64)
                    .cpus("0".to_string())
                    .mems("0".to_string())
                    .build()
                    .unwrap(),
            )
            .devices(devices);
        if blkio_weight_file.is_some() {
            b = b.block_io(LinuxBlockIoBuilder::default().weight(500u16).build().unwrap());
        }
        if huge_2mb {
            let limit = LinuxHugepageLimitBuilder::default()
                .page_size("2MB".to_string())
                .limit(4 * MIB)
                .build()
                .unwrap();
            b = b.hugepage_limits(vec![limit]);
        }
        b
    });
    cg.apply(&r).unwrap_or_else(|e| panic!("apply: {e}"));

    // Read everything back from the files.
    let (d, f) = file_for(cg, ("memory", "memory.limit_in_bytes"), ("memory", "memory.max"));
    assert_eq!(read(&d, f), (64 * MIB).to_string());
    if swap_accounting {
        let expected = if swap_file == "memory.swap.max" {
            64 * MIB
        } else {
            128 * MIB
        };
        assert_eq!(read(&d, swap_file), expected.to_string(), "{swap_file}");
    }
    if let Some(d) = cg.v1_dir("memory") {
        assert_eq!(read(d, "memory.swappiness"), "30");
        assert!(read(d, "memory.oom_control")
            .lines()
            .any(|l| l == "oom_kill_disable 1"));
    }
    let (d, f) = file_for(cg, ("pids", "pids.max"), ("pids", "pids.max"));
    assert_eq!(read(&d, f), "32");
    match cg.place("cpu", "cpu").unwrap() {
        Place::V1(d) => {
            assert_eq!(read(d, "cpu.shares"), "512");
            assert_eq!(read(d, "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(d, "cpu.cfs_period_us"), "100000");
            if d.join("cpu.cfs_burst_us").exists() {
                assert_eq!(read(d, "cpu.cfs_burst_us"), "10000");
            }
        }
        Place::V2(d) => {
            assert_eq!(read(d, "cpu.weight"), shares_to_weight(512).to_string());
            assert_eq!(read(d, "cpu.max"), "50000 100000");
        }
    }
    let (d, f) = file_for(cg, ("cpuset", "cpuset.cpus"), ("cpuset", "cpuset.cpus"));
    assert_eq!(read(&d, f), "0");
    if let Some((d, f)) = &blkio_weight_file {
        let expected = if *f == "io.weight" {
            blkio_weight_to_io_weight(500)
        } else {
            500
        };
        assert!(read(d, f).contains(&expected.to_string()), "{f}: {}", read(d, f));
    }
    if huge_2mb {
        let (d, f) = file_for(
            cg,
            ("hugetlb", "hugetlb.2MB.limit_in_bytes"),
            ("hugetlb", "hugetlb.2MB.max"),
        );
        assert_eq!(read(&d, f), (4 * MIB).to_string());
        if layout().unwrap() == Layout::Hybrid
            && hierarchies()
                .unwrap()
                .iter()
                .any(|h| h.unified && h.has("hugetlb"))
        {
            assert!(
                d.starts_with(&cg.dirs().iter().find(|d| d.unified).unwrap().mount_point),
                "on this hybrid host hugetlb must be set through cgroup2, not {}",
                d.display()
            );
        }
    }
    match cg.v1_dir("devices") {
        Some(d) => {
            let list = read(d, "devices.list");
            assert!(list.lines().any(|l| l == "c 1:3 rwm"), "devices.list: {list}");
            assert!(!list.lines().any(|l| l == "a *:* rwm"), "devices.list: {list}");
        }
        None => assert_eq!(v2_devices::attached_count(cg.unified_dir().unwrap()).unwrap(), 1),
    }

    // A real process.
    let mut child = Gated::spawn("echo started; exec sleep 1000");
    let pid = child.pid();
    cg.add_process(pid).unwrap_or_else(|e| panic!("add_process: {e}"));
    child.go();
    assert_eq!(child.line(), "started");
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let inside = parse_proc_cgroup(&proc_cgroup)
        .iter()
        .filter(|e| e.path == Path::new(cg.name()))
        .count();
    assert_eq!(inside, cg.dirs().len(), "/proc/{pid}/cgroup:\n{proc_cgroup}");

    cg.freeze().unwrap_or_else(|e| panic!("freeze: {e}"));
    assert!(cg.is_frozen().unwrap());
    if let Some(d) = cg.v1_dir("freezer") {
        assert_eq!(read(d, "freezer.state"), "FROZEN");
    }
    cg.thaw().unwrap_or_else(|e| panic!("thaw: {e}"));
    assert!(!cg.is_frozen().unwrap());

    let stats = cg.stats().unwrap_or_else(|e| panic!("stats: {e}"));
    assert_eq!(stats.pids.current, 1);
    assert_eq!(stats.pids.limit, 32);
    assert_eq!(stats.memory.usage.limit, 64 * MIB as u64);
    if huge_2mb {
        assert!(stats.hugetlb.contains_key("2MB"), "{:?}", stats.hugetlb);
    }
    assert!(!stats.cpuset.cpus.is_empty() || cg.place("cpuset", "cpuset").is_none());
    let json = serde_json::to_value(&stats).unwrap();
    eprintln!("stats: {json}");
    assert_eq!(json["pids"]["limit"], 32);

    drop(child);
    for _ in 0..100 {
        if cg.pids().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cg.destroy().unwrap_or_else(|e| panic!("destroy: {e}"));
    for d in cg.dirs() {
        assert!(!d.path.exists(), "destroy left {} behind", d.path.display());
    }
}

/// Removes a file on drop.
struct RemoveFile(PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn memory_limit_below_usage_names_file_and_value() {
    let t = TestCgroup::new();
    let shm = RemoveFile(PathBuf::from(format!(
        "/dev/shm/{}-mem",
        t.cg.name().trim_start_matches('/')
    )));
    // tmpfs pages are charged to the writer's memory cgroup and cannot be reclaimed without swap.
    let mut child = Gated::spawn(&format!(
        "head -c 16777216 /dev/zero > {} && echo filled; exec sleep 1000",
        shm.0.display()
    ));
    t.cg.add_process(child.pid()).unwrap();
    child.go();
    assert_eq!(child.line(), "filled");
    let limit = resources(|b| b.memory(LinuxMemoryBuilder::default().limit(MIB).build().unwrap()));
    let result = t.cg.apply(&limit);
    match t.cg.place("memory", "memory").unwrap() {
        Place::V1(d) if std::fs::read_to_string("/proc/swaps").unwrap().lines().count() <= 1 => {
            let e = result.expect_err("the kernel must refuse a limit below unreclaimable usage");
            let msg = e.to_string();
            assert_eq!(e.errno(), Some(libc::EBUSY), "{msg}");
            let file = d.join("memory.limit_in_bytes");
            assert!(
                msg.starts_with(&format!("Failed to write '1048576' to {}", file.display())),
                "{msg}"
            );
            assert!(msg.contains("below the current usage"), "{msg}");
        }
        // With swap the kernel swaps the pages out; on v2 memory.max is accepted and the kernel reclaims or
        // OOM-kills instead of refusing. Either way the write itself must succeed.
        _ => result.unwrap(),
    }
}

#[test]
fn value_refused_by_the_kernel_names_file_and_value() {
    let t = TestCgroup::new();
    let cpu = LinuxCpuBuilder::default()
        .cpus("4095".to_string())
        .build()
        .unwrap();
    let e = t.cg.apply(&resources(|b| b.cpu(cpu))).unwrap_err().to_string();
    let (d, f) = file_for(&t.cg, ("cpuset", "cpuset.cpus"), ("cpuset", "cpuset.cpus"));
    assert!(
        e.starts_with(&format!("Failed to write '4095' to {}: ", d.join(f).display())),
        "{e}"
    );
    assert!(e.contains("out of"), "{e}");
}

#[test]
fn destroy_removes_descendants_and_tolerates_missing_dirs() {
    let t = TestCgroup::new();
    for d in t.cg.dirs() {
        std::fs::create_dir_all(d.path.join("child/grandchild")).unwrap();
        std::fs::create_dir_all(d.path.join("sibling")).unwrap();
    }
    t.cg.destroy().unwrap();
    for d in t.cg.dirs() {
        assert!(!d.path.exists(), "{} left behind", d.path.display());
    }
    t.cg.destroy()
        .expect("destroying an already removed cgroup is fine");
    assert!(t.cg.pids().unwrap().is_empty());
}

#[test]
fn network_settings_follow_the_mounted_controllers() {
    let t = TestCgroup::new();
    let net = LinuxNetworkBuilder::default()
        .class_id(0x10001u32)
        .build()
        .unwrap();
    let result = t.cg.apply(&resources(|b| b.network(net)));
    match t.cg.v1_dir("net_cls") {
        Some(d) => {
            result.unwrap();
            assert_eq!(read(d, "net_cls.classid"), "65537");
        }
        None => assert!(result
            .unwrap_err()
            .to_string()
            .contains("net_cls controller is not mounted")),
    }
}

#[test]
fn unified_keys_are_written_or_refused_clearly() {
    let t = TestCgroup::new();
    let dir =
        t.cg.unified_dir()
            .expect("this test needs a cgroup2 hierarchy (hybrid or v2 host)")
            .to_path_buf();
    let bad = HashMap::from([("../escape".to_string(), "1".to_string())]);
    let e =
        t.cg.apply(&resources(|b| b.unified(bad)))
            .unwrap_err()
            .to_string();
    assert!(
        e.starts_with("Invalid linux.resources.unified key '../escape'"),
        "{e}"
    );

    let missing = HashMap::from([("nosuch.file".to_string(), "1".to_string())]);
    let e =
        t.cg.apply(&resources(|b| b.unified(missing)))
            .unwrap_err()
            .to_string();
    assert!(
        e.contains(&format!("{} does not exist", dir.join("nosuch.file").display())),
        "{e}"
    );

    let ok = HashMap::from([
        ("pids.max".to_string(), "7".to_string()),
        ("hugetlb.2MB.max".to_string(), "2097152".to_string()),
    ]);
    let ok: HashMap<String, String> = ok.into_iter().filter(|(k, _)| dir.join(k).exists()).collect();
    t.cg.apply(&resources(|b| b.unified(ok.clone()))).unwrap();
    for (k, v) in &ok {
        assert_eq!(&read(&dir, k), v);
    }
}

#[test]
fn v2_freezer_on_the_unified_hierarchy() {
    let t = TestCgroup::new();
    let dir =
        t.cg.unified_dir()
            .expect("this test needs a cgroup2 hierarchy (hybrid or v2 host)")
            .to_path_buf();
    let mut child = Gated::spawn("echo started; exec sleep 1000");
    t.cg.add_process(child.pid()).unwrap();
    child.go();
    assert_eq!(child.line(), "started");
    v2::freezer::freeze(&dir).unwrap_or_else(|e| panic!("v2 freeze: {e}"));
    assert!(read(&dir, "cgroup.events").lines().any(|l| l == "frozen 1"));
    assert!(v2::freezer::is_frozen(&dir).unwrap());
    v2::freezer::thaw(&dir).unwrap();
    assert!(read(&dir, "cgroup.events").lines().any(|l| l == "frozen 0"));
    assert!(!v2::freezer::is_frozen(&dir).unwrap());
}

#[test]
fn v2_device_filter_is_enforced_and_replaced() {
    require_root("attaching BPF device programs");
    let t = TestCgroup::new();
    let dir =
        t.cg.unified_dir()
            .expect("this test needs a cgroup2 hierarchy (hybrid or v2 host)")
            .to_path_buf();
    let allow_all = DeviceRule {
        allow: true,
        kind: DevKind::All,
        major: None,
        minor: None,
        access: ACC_ALL,
    };
    let deny_null_read = DeviceRule {
        allow: false,
        kind: DevKind::Char,
        major: Some(1),
        minor: Some(3),
        access: ACC_READ,
    };
    let probe = "if cat /dev/null 2>/dev/null; then echo read-ok; else echo read-denied; fi; \
                 if echo x > /dev/null; then echo write-ok; else echo write-denied; fi; exec sleep 1000";

    v2_devices::apply(&dir, &[allow_all, deny_null_read]).unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(v2_devices::attached_count(&dir).unwrap(), 1);
    let mut child = Gated::spawn(probe);
    t.cg.add_process(child.pid()).unwrap();
    child.go();
    assert_eq!(child.line(), "read-denied");
    assert_eq!(child.line(), "write-ok");
    drop(child);

    // Re-applying replaces the program: still one attached, and the new rules hold.
    v2_devices::apply(&dir, &[allow_all]).unwrap();
    assert_eq!(v2_devices::attached_count(&dir).unwrap(), 1);
    let mut child = Gated::spawn(probe);
    t.cg.add_process(child.pid()).unwrap();
    child.go();
    assert_eq!(child.line(), "read-ok");
    assert_eq!(child.line(), "write-ok");
}

#[test]
fn memory_and_swap_can_be_raised_and_lowered() {
    let t = TestCgroup::new();
    let (dir, limit_file, swap_file) = match t.cg.place("memory", "memory").unwrap() {
        Place::V1(d) => (
            d.to_path_buf(),
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
        ),
        Place::V2(d) => (d.to_path_buf(), "memory.max", "memory.swap.max"),
    };
    assert!(
        dir.join(swap_file).exists(),
        "this test needs swap accounting: {} does not exist",
        dir.join(swap_file).display()
    );
    let v2 = swap_file == "memory.swap.max";
    let unlimited_v1 = read(&dir, limit_file);
    // (limit, memory+swap) in MiB, -1 = unlimited; each step must be accepted whichever way it moves.
    for (limit, swap) in [
        (64, 128),
        (256, 512),
        (32, 48),
        (32, 32),
        (512, -1),
        (100, 200),
        (-1, -1),
    ] {
        let bytes = |v: i64| if v < 0 { -1 } else { v * MIB };
        let m = LinuxMemoryBuilder::default()
            .limit(bytes(limit))
            .swap(bytes(swap))
            .build()
            .unwrap();
        t.cg.apply(&resources(|b| b.memory(m)))
            .unwrap_or_else(|e| panic!("limit {limit} MiB, swap {swap} MiB: {e}"));
        let expect = |v: i64| match (v < 0, v2) {
            (true, true) => "max".to_string(),
            (true, false) => unlimited_v1.clone(),
            (false, _) => (v * MIB).to_string(),
        };
        assert_eq!(
            read(&dir, limit_file),
            expect(limit),
            "limit after ({limit}, {swap})"
        );
        let swap_expected = match (swap < 0, v2) {
            (false, true) => ((swap - limit) * MIB).to_string(),
            _ => expect(swap),
        };
        assert_eq!(
            read(&dir, swap_file),
            swap_expected,
            "swap after ({limit}, {swap})"
        );
    }
    let pids = LinuxPidsBuilder::default().limit(0).build().unwrap();
    t.cg.apply(&resources(|b| b.pids(pids))).unwrap();
    let (d, f) = file_for(&t.cg, ("pids", "pids.max"), ("pids", "pids.max"));
    assert_eq!(read(&d, f), "max");
}
