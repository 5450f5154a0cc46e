//! Building filters from profile snippets: validation, actions, conditions, architectures, flags, and the
//! notify-fd hand-over over a unix socket. Nothing here loads a filter (see `kernel_tests`).

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Instant;

use libseccomp::{ScmpAction, ScmpArch};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use oci_spec::runtime::{Arch, LinuxSeccomp};
use serde_json::{json, Value};

use super::*;

fn profile(value: Value) -> LinuxSeccomp {
    serde_json::from_value(value).expect("test profile parses")
}

fn build(value: Value) -> Filter {
    build_filter(&profile(value)).unwrap_or_else(|e| panic!("build_filter failed: {e}"))
}

fn build_err(value: Value) -> String {
    match build_filter(&profile(value)) {
        Ok(_) => panic!("build_filter accepted a bad profile"),
        Err(e) => e.to_string(),
    }
}

fn one_rule(default: &str, action: &str, extra: Value) -> Value {
    let mut entry = json!({"names": ["getcwd"], "action": action});
    if let (Some(entry), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
        entry.extend(extra.clone());
    }
    json!({"defaultAction": default, "listenerPath": "/run/agent.sock", "syscalls": [entry]})
}

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vessel-seccomp-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_action_becomes_its_libseccomp_action() {
    let cases = [
        ("SCMP_ACT_KILL", "SCMP_ACT_ALLOW", "action KILL;"),
        ("SCMP_ACT_KILL_THREAD", "SCMP_ACT_ALLOW", "action KILL;"),
        ("SCMP_ACT_KILL_PROCESS", "SCMP_ACT_ALLOW", "action KILL_PROCESS;"),
        ("SCMP_ACT_TRAP", "SCMP_ACT_ALLOW", "action TRAP;"),
        ("SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW", "action ERRNO(1);"),
        ("SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "action TRACE(1);"),
        ("SCMP_ACT_LOG", "SCMP_ACT_ALLOW", "action LOG;"),
        ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "action ALLOW;"),
        ("SCMP_ACT_NOTIFY", "SCMP_ACT_ALLOW", "action 0x7fc00000;"),
    ];
    for (action, default, pfc_action) in cases {
        let filter = build(one_rule(default, action, json!({})));
        assert_eq!(filter.rule_count(), 1, "{action}");
        assert!(filter.skipped_syscalls().is_empty(), "{action}");
        assert_eq!(filter.uses_notify(), action == "SCMP_ACT_NOTIFY", "{action}");
        let pfc = filter.to_pfc().unwrap();
        assert!(pfc.contains("filter for syscall \"getcwd\""), "{action}: {pfc}");
        assert!(
            pfc.contains(pfc_action),
            "{action}: expected {pfc_action} in {pfc}"
        );
    }
}

#[test]
fn errno_ret_is_used_and_defaults_to_eperm() {
    let pfc = build(one_rule(
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        json!({"errnoRet": 38}),
    ))
    .to_pfc()
    .unwrap();
    assert!(pfc.contains("action ERRNO(38);"), "{pfc}");
    let pfc = build(one_rule(
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_TRACE",
        json!({"errnoRet": 7}),
    ))
    .to_pfc()
    .unwrap();
    assert!(pfc.contains("action TRACE(7);"), "{pfc}");

    let filter = build(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38}));
    assert_eq!(filter.ctx.get_act_default().unwrap(), ScmpAction::Errno(38));
    let filter = build(json!({"defaultAction": "SCMP_ACT_ERRNO"}));
    assert_eq!(
        filter.ctx.get_act_default().unwrap(),
        ScmpAction::Errno(libc::EPERM)
    );
    let filter = build(json!({"defaultAction": "SCMP_ACT_KILL"}));
    assert_eq!(filter.ctx.get_act_default().unwrap(), ScmpAction::KillThread);
}

#[test]
fn errno_ret_with_an_action_that_has_none_is_an_error() {
    let err = build_err(one_rule(
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_ALLOW",
        json!({"errnoRet": 5}),
    ));
    assert_eq!(
        err,
        "Seccomp syscalls[0] (getcwd): errnoRet 5 is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not SCMP_ACT_ALLOW"
    );
    let err = build_err(json!({"defaultAction": "SCMP_ACT_KILL_PROCESS", "defaultErrnoRet": 1}));
    assert!(
        err.starts_with("Seccomp defaultAction: errnoRet 1 is only valid"),
        "{err}"
    );
    let err = build_err(one_rule(
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        json!({"errnoRet": 70000}),
    ));
    assert_eq!(
        err,
        "Seccomp syscalls[0] (getcwd): errnoRet 70000 is out of range (0 to 65535)"
    );
}

#[test]
fn a_rule_equal_to_the_default_action_is_skipped() {
    // ERRNO without errnoRet is ERRNO(EPERM), the same as the default: nothing to add.
    let filter = build(one_rule("SCMP_ACT_ERRNO", "SCMP_ACT_ERRNO", json!({})));
    assert_eq!(filter.rule_count(), 0);
    // SCMP_ACT_KILL is SCMP_ACT_KILL_THREAD.
    let filter = build(one_rule("SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL", json!({})));
    assert_eq!(filter.rule_count(), 0);
    // Another errno is another action.
    let filter = build(one_rule(
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_ERRNO",
        json!({"errnoRet": 38}),
    ));
    assert_eq!(filter.rule_count(), 1);
}

#[test]
fn conditions_on_different_arguments_are_one_rule() {
    let filter = build(one_rule(
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        json!({"args": [
            {"index": 0, "value": 5, "op": "SCMP_CMP_EQ"},
            {"index": 1, "value": 7, "op": "SCMP_CMP_GT"},
        ]}),
    ));
    assert_eq!(filter.rule_count(), 1);
    let pfc = filter.to_pfc().unwrap();
    assert!(pfc.contains("$a0.lo32 == 5"), "{pfc}");
    assert!(pfc.contains("$a1.lo32 > 7"), "{pfc}");
}

#[test]
fn conditions_on_the_same_argument_are_separate_rules_as_in_runc() {
    let filter = build(one_rule(
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        json!({"args": [
            {"index": 0, "value": 5, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 6, "op": "SCMP_CMP_EQ"},
        ]}),
    ));
    assert_eq!(filter.rule_count(), 2);
    let pfc = filter.to_pfc().unwrap();
    assert!(
        pfc.contains("$a0.lo32 == 5") && pfc.contains("$a0.lo32 == 6"),
        "{pfc}"
    );

    // runc: once an index repeats, every condition of the entry is a rule of its own (OR), index 1 too.
    let filter = build(one_rule(
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        json!({"args": [
            {"index": 0, "value": 5, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 6, "op": "SCMP_CMP_EQ"},
            {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"},
        ]}),
    ));
    assert_eq!(filter.rule_count(), 3);
}

#[test]
fn every_operator_builds_and_masked_eq_takes_value_as_mask() {
    for op in [
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    ] {
        let filter = build(one_rule(
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_ERRNO",
            json!({"args": [{"index": 2, "value": 0xff00, "valueTwo": 0x1200, "op": op}]}),
        ));
        assert_eq!(filter.rule_count(), 1, "{op}");
    }
    let pfc = build(one_rule(
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        json!({"args": [{"index": 2, "value": 0xff00, "valueTwo": 0x1200, "op": "SCMP_CMP_MASKED_EQ"}]}),
    ))
    .to_pfc()
    .unwrap();
    assert!(pfc.contains("$a2.lo32 & 0x0000ff00 == 4608"), "{pfc}");
}

#[test]
fn an_argument_index_past_five_is_an_error() {
    let err = build_err(one_rule(
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        json!({"args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}),
    ));
    assert_eq!(
        err,
        "Seccomp syscalls[0] (getcwd): argument index 6 is out of range (0 to 5)"
    );
}

#[test]
fn listed_architectures_are_added_and_native_is_always_there() {
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["getcwd", "socketcall"], "action": "SCMP_ACT_ERRNO"}],
    }));
    for arch in [ScmpArch::Native, ScmpArch::X86, ScmpArch::X32, ScmpArch::Aarch64] {
        assert!(filter.ctx.is_arch_present(arch).unwrap(), "{arch:?} missing");
    }
    assert!(filter.skipped_syscalls().is_empty());
    let pfc = filter.to_pfc().unwrap();
    for arch in ["x86_64", "x86 ", "x32", "aarch64"] {
        assert!(
            pfc.contains(&format!("# filter for arch {arch}")),
            "{arch}: {pfc}"
        );
    }
    // socketcall exists on x86 only: resolved once, placed by libseccomp where it exists.
    assert!(pfc.contains("\"socketcall\" (102)"), "{pfc}");

    let filter = build(json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}));
    assert!(filter.ctx.is_arch_present(ScmpArch::native()).unwrap());
}

#[test]
fn every_oci_architecture_is_added_or_refused_by_name() {
    let all = serde_json::to_value([
        Arch::ScmpArchNative,
        Arch::ScmpArchX86,
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX32,
        Arch::ScmpArchArm,
        Arch::ScmpArchAarch64,
        Arch::ScmpArchMips,
        Arch::ScmpArchMips64,
        Arch::ScmpArchMips64n32,
        Arch::ScmpArchMipsel,
        Arch::ScmpArchMipsel64,
        Arch::ScmpArchMipsel64n32,
        Arch::ScmpArchPpc,
        Arch::ScmpArchPpc64,
        Arch::ScmpArchPpc64le,
        Arch::ScmpArchS390,
        Arch::ScmpArchS390x,
        Arch::ScmpArchParisc,
        Arch::ScmpArchParisc64,
        Arch::ScmpArchRiscv64,
        Arch::ScmpArchLoongarch64,
        Arch::ScmpArchM68k,
        Arch::ScmpArchSh,
        Arch::ScmpArchSheb,
    ])
    .unwrap();
    // Little-endian x86-64 here: big-endian ABIs cannot share its filter, and libseccomp 2.5 predates a few.
    let big_endian = [
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_S390",
        "SCMP_ARCH_S390X",
        "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64",
        "SCMP_ARCH_SHEB",
    ];
    let newer_than_2_5 = [
        "SCMP_ARCH_LOONGARCH64",
        "SCMP_ARCH_M68K",
        "SCMP_ARCH_SH",
        "SCMP_ARCH_SHEB",
    ];
    let mut added = Vec::new();
    for arch in all.as_array().unwrap() {
        let name = arch.as_str().unwrap();
        match build_filter(&profile(
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [name]}),
        )) {
            Ok(filter) => {
                let scmp = scmp_arch(serde_json::from_value(arch.clone()).unwrap());
                assert!(filter.ctx.is_arch_present(scmp).unwrap(), "{name}");
                added.push(name);
            }
            Err(e) => {
                let msg = e.to_string();
                let prefix =
                    format!("Seccomp architecture {name} cannot be added to the filter (libseccomp 2.");
                assert!(msg.starts_with(&prefix), "{msg}");
                let expected = if big_endian.contains(&name)
                    && msg.ends_with("byte order differs from the native architecture's")
                {
                    true
                } else {
                    newer_than_2_5.contains(&name) && msg.ends_with("this libseccomp does not know it")
                };
                assert!(expected, "{msg}");
            }
        }
    }
    for name in [
        "SCMP_ARCH_NATIVE",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_MIPSEL64N32",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_RISCV64",
    ] {
        assert!(added.contains(&name), "{name} was refused");
    }
}

#[test]
fn an_unknown_architecture_does_not_parse() {
    let err = serde_json::from_value::<LinuxSeccomp>(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("SCMP_ARCH_Z80"), "{err}");
}

#[test]
fn unknown_syscalls_are_skipped_and_listed_once() {
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["getcwd", "vessel_no_such_call", "read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["vessel_no_such_call", "another_unknown"], "action": "SCMP_ACT_LOG"},
        ],
    }));
    assert_eq!(filter.rule_count(), 2);
    assert_eq!(
        filter.skipped_syscalls(),
        ["vessel_no_such_call", "another_unknown"]
    );
}

#[test]
fn a_bad_action_or_operator_is_an_error() {
    let err = serde_json::from_value::<LinuxSeccomp>(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_EXPLODE"}],
    }))
    .unwrap_err();
    assert!(err.to_string().contains("SCMP_ACT_EXPLODE"), "{err}");
    let err = serde_json::from_value::<LinuxSeccomp>(json!({"defaultAction": "SCMP_ACT_NOPE"})).unwrap_err();
    assert!(err.to_string().contains("SCMP_ACT_NOPE"), "{err}");
    let err = serde_json::from_value::<LinuxSeccomp>(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}],
    }))
    .unwrap_err();
    assert!(err.to_string().contains("SCMP_CMP_ALMOST"), "{err}");
}

#[test]
fn entries_without_names_are_errors() {
    let err = build_err(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
    );
    assert_eq!(err, "Seccomp syscalls[0] has no names");
    let err = build_err(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["read", ""], "action": "SCMP_ACT_ERRNO"},
    ]}));
    assert_eq!(err, "Seccomp syscalls[1] has an empty syscall name");
}

#[test]
fn notify_rules_are_checked() {
    let no_listener = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]});
    assert_eq!(
        build_err(no_listener),
        "Seccomp syscalls[0] (mkdir): SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath to be set"
    );
    let write = json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/a.sock",
                       "syscalls": [{"names": ["mkdir", "write"], "action": "SCMP_ACT_NOTIFY"}]});
    assert_eq!(
        build_err(write),
        "Seccomp SCMP_ACT_NOTIFY cannot be used for syscall write: the runtime needs it to hand the notify fd over"
    );
    let default = json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/a.sock"});
    assert!(build_err(default).starts_with("Seccomp defaultAction SCMP_ACT_NOTIFY is not supported"));
    let metadata = json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x"});
    assert_eq!(
        build_err(metadata),
        "Seccomp listenerMetadata is set but listenerPath is not"
    );

    // Notify only counts when a rule is really added.
    let filter = build(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/a.sock",
                              "syscalls": [{"names": ["vessel_unknown"], "action": "SCMP_ACT_NOTIFY"}]}),
    );
    assert!(!filter.uses_notify());
}

#[test]
fn flags_set_filter_attributes() {
    let filter = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
    }));
    assert!(filter.ctx.get_ctl_tsync().unwrap());
    assert!(filter.ctx.get_ctl_log().unwrap());
    assert!(filter.ctx.get_ctl_ssb().unwrap());
    // The caller owns no_new_privs.
    assert!(!filter.ctx.get_ctl_nnp().unwrap());

    let plain = build(json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    assert!(!plain.ctx.get_ctl_tsync().unwrap());
    assert!(!plain.ctx.get_ctl_log().unwrap());
}

#[test]
fn wait_killable_recv_needs_libseccomp_2_6() {
    let config = profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}),
    );
    let version = ScmpVersion::current().unwrap();
    match build_filter(&config) {
        Ok(filter) => {
            assert!((version.major, version.minor) >= (2, 6), "{version}");
            assert!(filter.ctx.get_ctl_waitkill().unwrap());
        }
        Err(e) => {
            assert!(
                (version.major, version.minor) < (2, 6),
                "libseccomp {version}: {e}"
            );
            let msg = e.to_string();
            assert!(
                msg.starts_with("Seccomp flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is not supported here (libseccomp 2."),
                "{msg}"
            );
        }
    }
}

#[test]
fn binary_tree_only_with_rules() {
    let filter = build(one_rule("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", json!({})));
    assert_eq!(filter.ctx.get_ctl_optimize().unwrap(), 2);
    let filter = build(json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    assert_eq!(filter.ctx.get_ctl_optimize().unwrap(), 1);
}

/// podman's default profile (containers-common's `seccomp.json`) in OCI form, as podman passes it on
/// x86-64: every entry, the host arch and its sub-arches.
pub(super) fn podman_default_profile() -> LinuxSeccomp {
    const PATH: &str = "/usr/share/containers/seccomp.json";
    let text = std::fs::read(PATH)
        .unwrap_or_else(|e| panic!("{PATH}: {e} (install Debian's golang-github-containers-common)"));
    let source: Value = serde_json::from_slice(&text).expect("containers seccomp.json parses");
    let syscalls: Vec<Value> = source["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut entry = json!({"names": s["names"], "action": s["action"]});
            for key in ["args", "errnoRet"] {
                if !s[key].is_null() {
                    entry[key] = s[key].clone();
                }
            }
            entry
        })
        .collect();
    profile(json!({
        "defaultAction": source["defaultAction"],
        "defaultErrnoRet": source["defaultErrnoRet"],
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    }))
}

#[test]
fn podman_default_profile_builds() {
    let config = podman_default_profile();
    let names: usize = config.syscalls().iter().flatten().map(|s| s.names().len()).sum();
    assert!(names > 300, "only {names} names");
    // Warm-up: libseccomp probes the kernel once per process.
    build_filter(&config).unwrap();
    let rounds = 20;
    let start = Instant::now();
    let mut filter = None;
    for _ in 0..rounds {
        filter = Some(build_filter(&config).unwrap());
    }
    let per_build = start.elapsed() / rounds;
    let filter = filter.unwrap();
    eprintln!(
        "podman default profile: {names} names, {} rules, {} skipped {:?}, {per_build:?} per build",
        filter.rule_count(),
        filter.skipped_syscalls().len(),
        filter.skipped_syscalls(),
    );
    assert!(filter.rule_count() > 300);
    assert_eq!(filter.ctx.get_ctl_optimize().unwrap(), 2);
    assert_eq!(
        filter.ctx.get_act_default().unwrap(),
        ScmpAction::Errno(libc::ENOSYS)
    );
}

#[test]
fn process_state_document_follows_the_spec() {
    let state = br#"{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":4422,"bundle":"/b","annotations":{"k":"v"}}"#;
    let doc: Value = serde_json::from_slice(
        &notify::process_state(std::path::Path::new("/a"), state, "MKNOD=/dev/null").unwrap(),
    )
    .unwrap();
    assert_eq!(
        doc,
        json!({
            "ociVersion": "1.2.0",
            "fds": ["seccompFd"],
            "pid": 4422,
            "metadata": "MKNOD=/dev/null",
            "state": {"ociVersion":"1.2.0","id":"c1","status":"creating","pid":4422,"bundle":"/b","annotations":{"k":"v"}},
        })
    );
    let doc: Value =
        serde_json::from_slice(&notify::process_state(std::path::Path::new("/a"), state, "").unwrap())
            .unwrap();
    assert!(doc.get("metadata").is_none(), "{doc}");
}

#[test]
fn send_notify_fd_refuses_bad_state_and_missing_listener() {
    let dir = TempDir::new("bad");
    let path = dir.0.join("agent.sock");
    let (read, _write) = nix::unistd::pipe().unwrap();
    let err = send_notify_fd(&path, &read, b"{\"id\":\"c1\"}", "").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Container state for the seccomp agent at {}: the state has no numeric pid",
            path.display()
        )
    );
    let err = send_notify_fd(&path, &read, b"not json", "").unwrap_err();
    assert!(err.to_string().contains("the state is not valid JSON"), "{err}");
    let err = send_notify_fd(&path, &read, br#"{"pid":1}"#, "").unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "Cannot send the seccomp notify fd to the agent at {}: ",
            path.display()
        )),
        "{err}"
    );
}

/// What a seccomp agent received on one connection: the document and the fds.
pub(super) struct Received {
    pub document: Value,
    pub fds: Vec<OwnedFd>,
}

/// Accept one connection on `listener` and read it to the end, as an agent does.
pub(super) fn receive_one(listener: &UnixListener) -> Received {
    let (mut stream, _) = listener.accept().expect("accept");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut fds = Vec::new();
    let first = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg");
        for c in msg.cmsgs().expect("cmsgs") {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS just installed these fds in this process; nothing else owns them.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        msg.bytes
    };
    let mut data = buf[..first].to_vec();
    stream.read_to_end(&mut data).expect("read rest");
    Received {
        document: serde_json::from_slice(&data).expect("agent got JSON"),
        fds,
    }
}

#[test]
fn send_notify_fd_sends_state_and_fd_over_the_socket() {
    let dir = TempDir::new("send");
    let path = dir.0.join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let agent = std::thread::spawn(move || receive_one(&listener));

    let (read, write) = nix::unistd::pipe().unwrap();
    // A state bigger than one socket buffer still arrives whole, with the fd once.
    let big = "x".repeat(300 * 1024);
    let state = serde_json::to_vec(
        &json!({"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 77,
                                           "bundle": "/b", "annotations": {"big": big}}),
    )
    .unwrap();
    send_notify_fd(&path, &write, &state, "meta").unwrap();
    let got = agent.join().unwrap();
    assert_eq!(got.document["fds"], json!(["seccompFd"]));
    assert_eq!(got.document["pid"], 77);
    assert_eq!(got.document["metadata"], "meta");
    assert_eq!(got.document["state"]["id"], "c1");
    assert_eq!(
        got.document["state"]["annotations"]["big"].as_str().map(str::len),
        Some(300 * 1024)
    );
    assert_eq!(got.fds.len(), 1);
    // The fd that arrived is our pipe's write end.
    drop(write);
    std::fs::File::from(got.fds.into_iter().next().unwrap())
        .write_all(b"hi")
        .unwrap();
    let mut text = [0u8; 2];
    std::fs::File::from(read).read_exact(&mut text).unwrap();
    assert_eq!(&text, b"hi");
}

/// The way runc drives libseccomp: one context holding every architecture, rules in profile order.
fn one_context(config: &LinuxSeccomp, arches: &[ScmpArch]) -> libseccomp::ScmpFilterContext {
    let default =
        plan::scmp_action(config.default_action(), config.default_errno_ret(), String::new).unwrap();
    let plan = plan::plan(config, default, true).unwrap();
    let mut ctx = libseccomp::ScmpFilterContext::new(default).unwrap();
    for &arch in arches {
        ctx.add_arch(arch).unwrap();
    }
    for rule in &plan.rules {
        ctx.add_rule_conditional(rule.action, rule.syscall, &rule.conditions)
            .unwrap();
    }
    ctx.set_ctl_nnp(false).unwrap();
    ctx.set_api_sysrawrc(true).unwrap();
    ctx.set_ctl_optimize(2).unwrap();
    ctx
}

fn bpf(ctx: &libseccomp::ScmpFilterContext) -> Vec<u8> {
    let fd = nix::sys::memfd::memfd_create(c"bpf", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC).unwrap();
    ctx.export_bpf(&fd).unwrap();
    let mut file = std::fs::File::from(fd);
    std::io::Seek::rewind(&mut file).unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    bytes
}

#[test]
fn per_architecture_build_gives_the_same_bpf_as_one_context() {
    let config = podman_default_profile();
    let ours = build_filter(&config).unwrap();
    let theirs = one_context(&config, &[ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32]);
    let (ours, theirs) = (bpf(&ours.ctx), bpf(&theirs));
    assert!(ours.len() > 1000, "{} bytes of BPF", ours.len());
    assert!(
        ours == theirs,
        "BPF differs: {} bytes against {}",
        ours.len(),
        theirs.len()
    );
}

/// Benchmark, not a test (`cargo test -p vessel-runtime --lib seccomp::tests::bench -- --ignored --nocapture`):
/// `build_filter` against [`one_context`], side by side on podman's default profile.
#[test]
#[ignore = "benchmark: prints timings, asserts nothing about them"]
fn bench_podman_profile_build_against_one_context() {
    let three = podman_default_profile();
    let mut native_only = three.clone();
    native_only.set_architectures(None);
    let cases: [(&str, &LinuxSeccomp, &[ScmpArch]); 2] = [
        ("x86_64", &native_only, &[]),
        (
            "x86_64+x86+x32",
            &three,
            &[ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32],
        ),
    ];
    for (label, config, arches) in cases {
        let runc_way = || one_context(config, arches);
        let rounds = 50;
        for _ in 0..3 {
            build_filter(config).unwrap();
            runc_way();
        }
        let (mut ours, mut theirs) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        for _ in 0..rounds {
            let start = Instant::now();
            drop(build_filter(config).unwrap());
            ours += start.elapsed();
            let start = Instant::now();
            drop(runc_way());
            theirs += start.elapsed();
        }
        let (ours, theirs) = (ours / rounds, theirs / rounds);
        eprintln!(
            "podman default profile, {label}: build_filter {ours:?}, one context in profile order {theirs:?}, \
             ratio {:.2}",
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
