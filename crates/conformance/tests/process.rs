//! The container process: args, env, cwd, user, capabilities, rlimits, oom_score_adj, hostname, a
//! read-only root and the signal state it starts with. Areas: process, process_user,
//! process_capabilities, process_capabilities_fail, process_oom_score_adj, process_rlimits,
//! process_rlimits_fail, root_readonly_true, hostname, process_signals_start_clean.

use vessel_conformance::caps::{cap_mask, host_bounding, parse_mask};
use vessel_conformance::*;

/// Runs `script` in a fresh container from `b` and returns its stdout (asserting success).
fn run_script(rt: &Runtime, b: &mut Bundle, script: &str) -> String {
    b.sh(script);
    rt.run_ok(b).stdout.clone()
}

/// `key=value` lines printed by a script.
fn kv(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

// args, env and cwd are applied as given.
conformance!(process, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.mkdir("/test");
    b.cwd("/test").env("testa", "valuea").env("testb", "123");
    b.args(&[
        "sh",
        "-c",
        "echo cwd=$(pwd); echo a=$testa; echo b=$testb; echo arg0=$0 arg1=$1; echo path=$PATH",
        "zero",
        "one",
    ]);
    let out = rt.run_ok(&b).stdout.clone();
    let m = kv(&out);
    assert_eq!(m.get("cwd").map(String::as_str), Some("/test"), "{out}");
    assert_eq!(m.get("a").map(String::as_str), Some("valuea"), "{out}");
    assert_eq!(m.get("b").map(String::as_str), Some("123"), "{out}");
    assert!(
        out.contains("arg0=zero arg1=one"),
        "args not passed in order: {out}"
    );
    assert!(m.get("path").is_some_and(|p| p.contains("/bin")), "{out}");

    // The user process's exit code is the exit code of `run`.
    let mut b = Bundle::new();
    b.sh("exit 7");
    let id = rt.new_id();
    let _g = rt.guard(&id);
    let o = rt.run(&b, &id);
    assert_eq!(o.code, Some(7), "exit code of run should be the process's\n{o}");
});

// uid, gid, additionalGids and umask are applied.
conformance!(process_user, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.user(10, 10).additional_gids(&[5]).umask(0o002);
    let out = run_script(
        rt,
        &mut b,
        "grep -E '^(Uid|Gid|Groups):' /proc/self/status; echo umask=$(umask); touch /tmp/f; stat -c mode=%a /tmp/f",
    );
    let uid = out.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default();
    let gid = out.lines().find(|l| l.starts_with("Gid:")).unwrap_or_default();
    let groups = out.lines().find(|l| l.starts_with("Groups:")).unwrap_or_default();
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["10"; 4],
        "{out}"
    );
    assert_eq!(
        gid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["10"; 4],
        "{out}"
    );
    assert_eq!(
        groups.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["5"],
        "{out}"
    );
    let m = kv(&out);
    assert_eq!(m.get("umask").map(String::as_str), Some("0002"), "{out}");
    assert_eq!(m.get("mode").map(String::as_str), Some("664"), "{out}");

    // A non-root user from /etc/passwd (uid 1000) runs unprivileged.
    let mut b = Bundle::new();
    b.user(1000, 1000);
    let out = run_script(rt, &mut b, "id -u; id -g; grep CapEff /proc/self/status");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("1000"), "{out}");
    assert_eq!(lines.get(1).copied(), Some("1000"), "{out}");
    assert!(
        out.contains("0000000000000000"),
        "uid 1000 kept effective capabilities: {out}"
    );
});

fn cap_line(status: &str, name: &str) -> u64 {
    parse_mask(host::status_field(status, name).unwrap_or_else(|| panic!("no {name} in:\n{status}")))
}

// bounding/effective/permitted/inheritable/ambient are set exactly: a small set, and every capability
// the runtime holds ("privileged").
conformance!(process_capabilities, |rt: &Runtime| {
    let small = ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_KILL"];
    let mut b = Bundle::new();
    b.capabilities(&small);
    let out = run_script(rt, &mut b, "cat /proc/self/status");
    let want = cap_mask(&small);
    for f in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(cap_line(&out, f), want, "{f} for {small:?}");
    }
    assert_eq!(cap_line(&out, "CapInh"), 0, "CapInh");
    assert_eq!(cap_line(&out, "CapAmb"), 0, "CapAmb");

    // Ambient capabilities reach a non-root process.
    let mut b = Bundle::new();
    let amb = ["CAP_NET_BIND_SERVICE"];
    b.user(1000, 1000).no_new_privileges(true);
    b.config_mut()["process"]["capabilities"] = json!({
        "bounding": amb, "effective": amb, "permitted": amb, "inheritable": amb, "ambient": amb
    });
    let out = run_script(rt, &mut b, "cat /proc/self/status");
    assert_eq!(cap_line(&out, "CapAmb"), cap_mask(&amb), "ambient for uid 1000");
    assert_eq!(
        cap_line(&out, "CapEff"),
        cap_mask(&amb),
        "effective for uid 1000 via ambient"
    );

    let all = host_bounding();
    let mut b = Bundle::new();
    b.capabilities(&all);
    let out = run_script(rt, &mut b, "cat /proc/self/status");
    for f in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(
            cap_line(&out, f),
            cap_mask(&all),
            "{f} for every capability the host grants"
        );
    }
});

// An unknown capability name. runtime-spec >= 1.1: a capability that cannot be mapped or granted MUST be
// logged as a warning and SHOULD NOT fail the container (runtime-tools' older test expects an error).
// The known ones are still applied and the warning names the unknown one.
conformance!(process_capabilities_fail, |rt: &Runtime| {
    let mut b = Bundle::new();
    let caps = ["CAP_CHOWN", "CAP_TEST"];
    b.config_mut()["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    b.sh("grep CapBnd /proc/self/status");
    let out = rt.run_ok(&b);
    let bnd = host::status_field(&out.stdout, "CapBnd").map(parse_mask);
    assert_eq!(bnd, Some(cap_mask(&["CAP_CHOWN"])), "{out}");
    assert!(
        out.stderr.contains("CAP_TEST"),
        "no warning naming CAP_TEST on stderr\n{out}"
    );
});

// oomScoreAdj is written to the container process. Lowering it below the runtime's own value needs
// CAP_SYS_RESOURCE; where the runtime lacks it (this host's bounding set), such a config must fail
// cleanly rather than run with a different score.
conformance!(process_oom_score_adj, |rt: &Runtime| {
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for v in [500, 1000, own] {
        let mut b = Bundle::new();
        b.oom_score_adj(v);
        let out = run_script(rt, &mut b, "cat /proc/self/oom_score_adj");
        assert_eq!(out.trim(), v.to_string());
    }
    let lower = own - 300;
    let mut b = Bundle::new();
    b.oom_score_adj(lower);
    if host_bounding().contains(&"CAP_SYS_RESOURCE") {
        let out = run_script(rt, &mut b, "cat /proc/self/oom_score_adj");
        assert_eq!(out.trim(), lower.to_string());
    } else {
        b.args(&["true"]);
        let id = rt.new_id();
        let g = rt.guard(&id);
        rt.run(&b, &id).assert_fail(&format!(
            "oomScoreAdj {lower} below the runtime's own {own} without CAP_SYS_RESOURCE"
        ));
        drop(g);
        assert_nothing_left(rt, &b, "after a rejected oomScoreAdj");
    }
});

/// Parses /proc/self/limits into name -> (soft, hard).
fn limits(text: &str) -> std::collections::BTreeMap<String, (String, String)> {
    text.lines()
        .skip(1)
        .filter(|l| l.len() > 26)
        .map(|l| {
            let name = l[..26].trim().to_string();
            let rest: Vec<&str> = l[26..].split_whitespace().collect();
            (name, (rest[0].to_string(), rest[1].to_string()))
        })
        .collect()
}

// rlimits are applied (soft and hard), for byte, second and count limits.
conformance!(process_rlimits, |rt: &Runtime| {
    const G: u64 = 1 << 30;
    let mut b = Bundle::new();
    b.rlimit("RLIMIT_AS", 2 * G, G)
        .rlimit("RLIMIT_CORE", 4 * G, 3 * G)
        .rlimit("RLIMIT_DATA", 6 * G, 5 * G)
        .rlimit("RLIMIT_FSIZE", 8 * G, 7 * G)
        .rlimit("RLIMIT_STACK", 10 * G, 9 * G)
        .rlimit("RLIMIT_CPU", 120, 60)
        .rlimit("RLIMIT_NOFILE", 4000, 3000);
    let out = run_script(rt, &mut b, "cat /proc/self/limits; echo ulimit-n=$(ulimit -n)");
    let l = limits(&out);
    let want = [
        ("Max address space", G, 2 * G),
        ("Max core file size", 3 * G, 4 * G),
        ("Max data size", 5 * G, 6 * G),
        ("Max file size", 7 * G, 8 * G),
        ("Max stack size", 9 * G, 10 * G),
        ("Max cpu time", 60, 120),
        ("Max open files", 3000, 4000),
    ];
    for (name, soft, hard) in want {
        assert_eq!(
            l.get(name),
            Some(&(soft.to_string(), hard.to_string())),
            "{name} in:\n{out}"
        );
    }
    assert!(out.contains("ulimit-n=3000"), "{out}");
});

// An rlimit type the kernel does not know, or soft > hard, MUST make the runtime fail.
conformance!(process_rlimits_fail, |rt: &Runtime| {
    for (typ, hard, soft) in [("RLIMIT_TEST", 1024, 1024), ("RLIMIT_NOFILE", 100, 200)] {
        let mut b = Bundle::new();
        b.args(&["true"]).rlimit(typ, hard, soft);
        let id = rt.new_id();
        let _g = rt.guard(&id);
        rt.run(&b, &id)
            .assert_fail(&format!("run with rlimit {typ} hard={hard} soft={soft}"));
        drop(_g);
        assert_nothing_left(rt, &b, "after a rejected rlimit");
    }
});

// root.readonly: the root is mounted read-only (writes fail with EROFS) while mounts on top stay usable.
conformance!(root_readonly_true, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.root_readonly(true);
    b.add_mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev"]);
    let out = run_script(
        rt,
        &mut b,
        "touch /newfile 2>&1 && echo root=writable || echo root=readonly; \
         touch /tmp/x && echo tmp=writable; \
         awk '$5==\"/\" {print \"opts=\" $6}' /proc/self/mountinfo",
    );
    let m = kv(&out);
    assert_eq!(m.get("root").map(String::as_str), Some("readonly"), "{out}");
    assert!(
        out.contains("Read-only file system"),
        "write to / should fail with EROFS: {out}"
    );
    assert_eq!(m.get("tmp").map(String::as_str), Some("writable"), "{out}");
    assert!(
        m.get("opts").is_some_and(|o| o.split(',').any(|x| x == "ro")),
        "/ not mounted ro: {out}"
    );
    assert!(!b.host_path("/newfile").exists());

    let mut b = Bundle::new();
    b.root_readonly(false);
    run_script(rt, &mut b, "touch /newfile");
    assert!(
        b.host_path("/newfile").exists(),
        "root.readonly=false must be writable"
    );
});

// hostname is set in the new UTS namespace and the host's is untouched; a hostname without a UTS
// namespace MUST be rejected.
conformance!(hostname, |rt: &Runtime| {
    let host_name = nix::unistd::gethostname().unwrap();
    for name in [
        "hostname-specific",
        "h",
        "a-63-character-hostname-abcdefghijklmnopqrstuvwxyz0123456789abc",
    ] {
        let mut b = Bundle::new();
        b.hostname(name);
        let out = run_script(rt, &mut b, "hostname");
        assert_eq!(out.trim(), name);
    }
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host_name,
        "host hostname changed"
    );

    let mut b = Bundle::new();
    b.remove_hostname();
    let out = run_script(rt, &mut b, "hostname");
    assert_eq!(
        out.trim(),
        host_name.to_string_lossy(),
        "no hostname: inherits the host's in a new uts ns"
    );

    let mut b = Bundle::new();
    b.hostname("no-uts").remove_namespace("uts").args(&["true"]);
    let id = rt.new_id();
    let _g = rt.guard(&id);
    rt.run(&b, &id).assert_fail("hostname without a UTS namespace");
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host_name,
        "host hostname changed"
    );
});

// The process starts with every signal at its default action and none blocked, whatever the runtime's
// caller ignored (here SIGHUP, as under nohup) or the runtime itself ignores: an ignored signal survives
// exec, and a shell cannot trap a signal it was started with ignored.
conformance!(
    process_signals_start_clean,
    runc_differs =
        "runc 1.1.5 hands on signal 32 ignored (glibc's posix_spawn ignores its internal signals in \
                    the test's child, and Go's runtime does not reset that one)",
    |rt: &Runtime| {
        rt.set_wrapper(&["nohup"]);
        let mut b = Bundle::new();
        b.args(&["cat", "/proc/self/status"]);
        let out = rt.run_ok(&b).stdout.clone();
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in /proc/self/status: {out}"))
        };
        assert_eq!(field("SigIgn:"), "0000000000000000", "ignored signals");
        assert_eq!(field("SigBlk:"), "0000000000000000", "blocked signals");
    }
);
