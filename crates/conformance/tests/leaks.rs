//! Leak test: N create/start/delete cycles, then no mount, cgroup, process or state may remain.
//! N comes from VESSEL_LEAK_CYCLES (default 1000 for vessel, 100 for runc to save time).

use std::time::Instant;

use vessel_conformance::*;

fn cycles(rt: &Runtime) -> usize {
    std::env::var("VESSEL_LEAK_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if rt.is_vessel() { 1000 } else { 100 })
}

conformance!(leaks, |rt: &Runtime| {
    let n = cycles(rt);
    let parent = format!("/vessel-leak-{}-{}", std::process::id(), next_counter());
    let mut b = Bundle::new();
    b.args(&["true"]).cgroups_path_set(&format!("{parent}/c"));
    let t0 = Instant::now();
    for i in 0..n {
        let id = rt.new_id();
        let c = rt.guard(&id);
        rt.create(&b, &id).assert_ok(&format!("cycle {i}: create"));
        rt.start(&id).assert_ok(&format!("cycle {i}: start"));
        rt.wait_stopped(&id);
        rt.delete(&id).assert_ok(&format!("cycle {i}: delete"));
        std::mem::forget(c);
    }
    eprintln!(
        "{}: {n} create/start/delete cycles in {:.1?}",
        rt.name(),
        t0.elapsed()
    );

    let parents = host::cgroup_dirs_for(&parent);
    let mut left_cgroups = Vec::new();
    for p in &parents {
        if let Ok(rd) = std::fs::read_dir(p) {
            left_cgroups.extend(
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path().display().to_string()),
            );
        }
    }
    let left = Leftovers::of_paths(rt, b.path(), "");
    for p in parents.iter().rev() {
        let _ = std::fs::remove_dir(p);
    }
    assert!(
        left_cgroups.is_empty(),
        "cgroups left under {parent}: {left_cgroups:#?}"
    );
    left.assert_none(&format!("after {n} cycles"));
});
