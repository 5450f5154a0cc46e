//! linux.resources applied to the container's cgroups, with an absolute cgroupsPath and with a relative
//! one (which runtimes place below their own cgroup). Areas: linux_cgroups_{blkio,cpus,devices,hugetlb,
//! memory,network,pids} and linux_cgroups_relative_*.
//!
//! Each test creates a container (its init waits in `created`), finds the container's cgroup through
//! /proc/<pid>/cgroup, checks that it sits where cgroupsPath says, reads the controller files, then
//! deletes the container and checks that the cgroup went away.

use std::path::{Path, PathBuf};

use vessel_conformance::*;

fn bundle(relative: bool) -> Bundle {
    let mut b = Bundle::new();
    if relative {
        b.cgroups_path_relative();
    }
    b.args(&["sleep", "30"]);
    b
}

/// The container's cgroup directory for `controller` ("" = cgroup2), checked against cgroupsPath.
fn cgroup_dir(c: &Container, b: &Bundle, controller: &str) -> PathBuf {
    let pid = c.pid();
    let dir = host::cgroup_dir_of(&pid, controller).unwrap_or_else(|| {
        panic!(
            "container pid {pid} has no {controller:?} cgroup: {:?}",
            host::proc_cgroups(&pid)
        )
    });
    let cp = b.cgroups_path();
    let cm = host::cgroup_mounts();
    let mnt = if controller.is_empty() {
        cm.unified.clone().unwrap()
    } else {
        cm.v1_dir(controller).unwrap().to_path_buf()
    };
    if cp.starts_with('/') {
        assert_eq!(
            dir,
            mnt.join(cp.trim_start_matches('/')),
            "absolute cgroupsPath {cp} not honoured"
        );
    } else {
        assert!(
            dir.starts_with(&mnt) && dir.ends_with(&cp),
            "relative cgroupsPath {cp}: container is in {}",
            dir.display()
        );
    }
    dir
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// Force-deletes the container and asserts its cgroups are gone.
fn finish(rt: &Runtime, c: Container, b: &Bundle) {
    drop(c);
    assert_nothing_left(rt, b, "after delete --force");
}

/// Runs a config that asks for something this host cannot provide: the runtime must fail with a
/// non-zero exit and leave no cgroup, mount, state or process behind.
fn expect_clean_failure(rt: &Runtime, b: &Bundle, what: &str) {
    let id = rt.new_id();
    let g = rt.guard(&id);
    let out = rt.create(b, &id);
    out.assert_fail(what);
    drop(g);
    assert_nothing_left(rt, b, what);
}

fn pids(rt: &Runtime, relative: bool) {
    let mut b = bundle(relative);
    b.resource("pids", json!({"limit": 1000}));
    let c = rt.create_container(&b);
    let dir = cgroup_dir(&c, &b, "pids");
    assert_eq!(read(&dir, "pids.max"), "1000");
    finish(rt, c, &b);

    // The limit is enforced: with pids.max=4 (sh, a subshell and two sleeps) a third sleep cannot fork.
    let mut b = bundle(relative);
    b.resource("pids", json!({"limit": 4}))
        .sh("(sleep 10 & sleep 10 & sleep 10 & wait) 2>&1; echo done");
    let out = rt.run_ok(&b);
    assert!(
        out.stdout.contains("done")
            && (out.stdout.contains("can't fork") || out.stdout.contains("Resource temporarily unavailable")),
        "pids limit not enforced:\n{out}"
    );
}

conformance!(linux_cgroups_pids, |rt: &Runtime| pids(rt, false));
conformance!(linux_cgroups_relative_pids, |rt: &Runtime| pids(rt, true));

// kernel and kernelTCP are deprecated (runc 1.1 ignores them with a warning) and are not tested.
fn memory(rt: &Runtime, relative: bool) {
    for (limit, swappiness) in [(50593792u64, 10u64), (151781376, 100)] {
        let mut b = bundle(relative);
        b.resource(
            "memory",
            json!({
                "limit": limit, "reservation": limit, "swap": limit,
                "swappiness": swappiness, "disableOOMKiller": true
            }),
        );
        let c = rt.create_container(&b);
        let dir = cgroup_dir(&c, &b, "memory");
        assert_eq!(read(&dir, "memory.limit_in_bytes"), limit.to_string());
        assert_eq!(read(&dir, "memory.soft_limit_in_bytes"), limit.to_string());
        if dir.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(read(&dir, "memory.memsw.limit_in_bytes"), limit.to_string());
        }
        assert_eq!(read(&dir, "memory.swappiness"), swappiness.to_string());
        assert!(
            read(&dir, "memory.oom_control").contains("oom_kill_disable 1"),
            "oom killer not disabled"
        );
        finish(rt, c, &b);
    }
}

conformance!(linux_cgroups_memory, |rt: &Runtime| memory(rt, false));
conformance!(linux_cgroups_relative_memory, |rt: &Runtime| memory(rt, true));

fn cpus(rt: &Runtime, relative: bool) {
    let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let all = if n > 1 {
        format!("0-{}", n - 1)
    } else {
        "0".to_string()
    };
    for (shares, period, quota, cpus) in [
        (1024u64, 100000u64, 50000i64, "0".to_string()),
        (2048, 500000, 200000, all.clone()),
    ] {
        let mut b = bundle(relative);
        b.resource(
            "cpu",
            json!({"shares": shares, "period": period, "quota": quota, "cpus": cpus, "mems": "0"}),
        );
        let c = rt.create_container(&b);
        let cpu = cgroup_dir(&c, &b, "cpu");
        assert_eq!(read(&cpu, "cpu.shares"), shares.to_string());
        assert_eq!(read(&cpu, "cpu.cfs_period_us"), period.to_string());
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), quota.to_string());
        let cpuset = cgroup_dir(&c, &b, "cpuset");
        assert_eq!(read(&cpuset, "cpuset.cpus"), cpus);
        assert_eq!(read(&cpuset, "cpuset.mems"), "0");
        let allowed = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
        assert_eq!(
            host::status_field(&allowed, "Cpus_allowed_list"),
            Some(cpus.as_str())
        );
        finish(rt, c, &b);
    }
    // An empty cpu section is valid and changes nothing.
    let mut b = bundle(relative);
    b.resource("cpu", json!({}));
    let c = rt.create_container(&b);
    cgroup_dir(&c, &b, "cpu");
    finish(rt, c, &b);
}

conformance!(linux_cgroups_cpus, |rt: &Runtime| cpus(rt, false));
conformance!(linux_cgroups_relative_cpus, |rt: &Runtime| cpus(rt, true));

fn devices(rt: &Runtime, relative: bool) {
    let mut b = bundle(relative);
    b.resource(
        "devices",
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "minor": 20, "access": "rw"},
            {"allow": true, "type": "b", "major": 10, "minor": 200, "access": "r"}
        ]),
    );
    let c = rt.create_container(&b);
    let dir = cgroup_dir(&c, &b, "devices");
    let list = read(&dir, "devices.list");
    for want in ["c 10:229 rwm", "b 8:20 rw", "b 10:200 r"] {
        assert!(
            list.lines().any(|l| l == want),
            "{want:?} not in devices.list:\n{list}"
        );
    }
    assert!(
        !list.lines().any(|l| l == "a *:* rwm"),
        "devices not restricted:\n{list}"
    );
    finish(rt, c, &b);

    // Enforcement: a node for a device that is not allowed (1:1, /dev/mem) cannot be opened, while the
    // default devices can.
    let mut b = bundle(relative);
    b.add_device(json!({"path": "/dev/xmem", "type": "c", "major": 1, "minor": 1, "fileMode": 384}))
        .sh("head -c 1 /dev/xmem >/dev/null 2>&1 && echo mem=open || echo mem=denied; head -c 1 /dev/zero | wc -c");
    let out = rt.run_ok(&b);
    assert!(out.stdout.contains("mem=denied"), "{out}");
    assert!(
        out.stdout.lines().any(|l| l.trim() == "1"),
        "/dev/zero not usable: {out}"
    );
}

conformance!(linux_cgroups_devices, |rt: &Runtime| devices(rt, false));
conformance!(linux_cgroups_relative_devices, |rt: &Runtime| devices(rt, true));

fn blkio(rt: &Runtime, relative: bool) {
    let (major, minor) = host::some_block_device().expect("no block device on this host");
    let dev = format!("{major}:{minor}");
    for rate in [102400u64, 204800] {
        let mut b = bundle(relative);
        b.resource(
            "blockIO",
            json!({
                "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": rate}],
                "throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": rate}],
                "throttleReadIOPSDevice": [{"major": major, "minor": minor, "rate": rate}],
                "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": rate}]
            }),
        );
        let c = rt.create_container(&b);
        let dir = cgroup_dir(&c, &b, "blkio");
        for f in [
            "read_bps_device",
            "write_bps_device",
            "read_iops_device",
            "write_iops_device",
        ] {
            let text = read(&dir, &format!("blkio.throttle.{f}"));
            assert!(
                text.lines().any(|l| l == format!("{dev} {rate}")),
                "blkio.throttle.{f}: {text:?}"
            );
        }
        finish(rt, c, &b);
    }

    // Weights need a proportional-weight I/O scheduler (blkio.weight or blkio.bfq.weight). Where the
    // kernel has neither (this host), asking for a weight must fail cleanly.
    let mut b = bundle(relative);
    b.resource(
        "blockIO",
        json!({"weight": 500, "weightDevice": [{"major": major, "minor": minor, "weight": 500}]}),
    );
    let root = host::cgroup_mounts().v1_dir("blkio").unwrap().to_path_buf();
    let weight_file = ["blkio.weight", "blkio.bfq.weight"]
        .into_iter()
        .find(|f| root.join(f).exists());
    match weight_file {
        Some(f) => {
            let c = rt.create_container(&b);
            let dir = cgroup_dir(&c, &b, "blkio");
            assert!(read(&dir, f).contains("500"), "{f}");
            finish(rt, c, &b);
        }
        None => expect_clean_failure(rt, &b, "blkio weight on a kernel without blkio weight files"),
    }
}

conformance!(linux_cgroups_blkio, |rt: &Runtime| blkio(rt, false));
conformance!(linux_cgroups_relative_blkio, |rt: &Runtime| blkio(rt, true));

/// Huge page sizes the kernel supports, as OCI page size strings ("2MB", "1GB").
fn huge_page_sizes() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let kb: u64 = n.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
                    Some(if kb >= 1 << 20 {
                        format!("{}GB", kb >> 20)
                    } else if kb >= 1 << 10 {
                        format!("{}MB", kb >> 10)
                    } else {
                        format!("{kb}KB")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// hugetlb limits. On this hybrid host the hugetlb controller is only on the cgroup2 hierarchy
// (/sys/fs/cgroup/unified), so the limit belongs in hugetlb.<size>.max there; on a v1 host it is
// hugetlb.<size>.limit_in_bytes. runc 1.1 cannot use a v2 controller in hybrid mode and fails here.
fn hugetlb(rt: &Runtime, relative: bool) {
    let sizes = huge_page_sizes();
    assert!(
        !sizes.is_empty(),
        "kernel has no huge page sizes (/sys/kernel/mm/hugepages)"
    );
    let cm = host::cgroup_mounts();
    let on_v1 = cm.v1_dir("hugetlb").is_some();
    assert!(
        on_v1 || cm.v2_controllers().iter().any(|c| c == "hugetlb"),
        "hugetlb controller is neither on a v1 hierarchy nor on cgroup2"
    );
    let limit: u64 = 2 << 30;
    for size in &sizes {
        let mut b = bundle(relative);
        b.resource("hugepageLimits", json!([{"pageSize": size, "limit": limit}]));
        let c = rt.create_container(&b);
        let (dir, file) = if on_v1 {
            (
                cgroup_dir(&c, &b, "hugetlb"),
                format!("hugetlb.{size}.limit_in_bytes"),
            )
        } else {
            (cgroup_dir(&c, &b, ""), format!("hugetlb.{size}.max"))
        };
        assert_eq!(read(&dir, &file), limit.to_string(), "{}", dir.display());
        finish(rt, c, &b);
    }

    // A page size the kernel does not have MUST be an error.
    let mut b = bundle(relative);
    b.resource(
        "hugepageLimits",
        json!([{"pageSize": "3MB", "limit": 300u64 << 20}]),
    );
    expect_clean_failure(rt, &b, "hugetlb with an invalid page size 3MB");
}

conformance!(
    linux_cgroups_hugetlb,
    runc_differs =
        "runc 1.1 cannot use hugetlb on cgroup2 while the other controllers are v1 (this hybrid host)",
    |rt: &Runtime| hugetlb(rt, false)
);
conformance!(
    linux_cgroups_relative_hugetlb,
    runc_differs =
        "runc 1.1 cannot use hugetlb on cgroup2 while the other controllers are v1 (this hybrid host)",
    |rt: &Runtime| hugetlb(rt, true)
);

// network: classID (net_cls) and priorities (net_prio). Neither controller is mounted on this host (nor
// available on cgroup2), so the limits cannot be applied: the runtime must fail cleanly instead of
// running the container without them. Where they are mounted, the values are checked.
fn network(rt: &Runtime, relative: bool) {
    let cm = host::cgroup_mounts();
    let mounted = cm.v1_dir("net_cls").is_some() && cm.v1_dir("net_prio").is_some();
    for (classid, prio) in [(255u32, 10u32), (550, 30)] {
        let mut b = bundle(relative);
        b.resource(
            "network",
            json!({"classID": classid, "priorities": [{"name": "lo", "priority": prio}]}),
        );
        if mounted {
            let c = rt.create_container(&b);
            let cls = cgroup_dir(&c, &b, "net_cls");
            assert_eq!(read(&cls, "net_cls.classid"), classid.to_string());
            let prio_dir = cgroup_dir(&c, &b, "net_prio");
            let map = read(&prio_dir, "net_prio.ifpriomap");
            assert!(map.lines().any(|l| l == format!("lo {prio}")), "ifpriomap: {map}");
            finish(rt, c, &b);
        } else {
            expect_clean_failure(
                rt,
                &b,
                "net_cls/net_prio limits on a host without those controllers",
            );
        }
    }
}

conformance!(linux_cgroups_network, |rt: &Runtime| network(rt, false));
conformance!(linux_cgroups_relative_network, |rt: &Runtime| network(rt, true));
