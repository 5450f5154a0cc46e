//! Bad input: every case must exit non-zero, print exactly one error line on stderr (checked for vessel;
//! runc's wording and line count are its own), write an error record to the `--log` file in JSON
//! (`{"level":"error","msg":...,"time":...}`), and leave no mount, cgroup, state directory or process
//! behind. Mount destinations that try to leave the rootfs through symlinks must fail or land inside
//! the rootfs, never on the host.

use std::path::{Path, PathBuf};

use vessel_conformance::host::parse_mountinfo;
use vessel_conformance::tempdir::TempDir;
use vessel_conformance::*;

/// A `--log FILE --log-format json` pair in its own temp dir.
struct Log {
    dir: TempDir,
}

impl Log {
    fn new() -> Log {
        Log {
            dir: TempDir::new("log"),
        }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("runtime.log")
    }
    fn global(&self) -> Vec<String> {
        vec![
            "--log".into(),
            self.path().to_string_lossy().into_owned(),
            "--log-format".into(),
            "json".into(),
        ]
    }
    fn text(&self) -> String {
        std::fs::read_to_string(self.path()).unwrap_or_default()
    }
}

/// Runs `args` with `--log FILE --log-format json`.
fn exec_logged(rt: &Runtime, log: &Log, args: &[&str]) -> Out {
    let g = log.global();
    let g: Vec<&str> = g.iter().map(String::as_str).collect();
    rt.exec_with(&g, args, runtime::cmd_timeout())
}

/// The common assertions for a rejected command.
fn check_rejected(rt: &Runtime, out: &Out, log: &Log, what: &str) {
    out.assert_fail(what);
    if rt.is_vessel() {
        let lines = out.stderr_lines();
        // A usage error shows clap's whole message (the error, the usage, where help is); any other
        // rejection is one line.
        let usage = lines.first().is_some_and(|l| l.starts_with("error: "))
            && lines.iter().any(|l| l.starts_with("Usage: vessel-runtime"));
        assert!(
            usage || lines.len() == 1,
            "{what}: expected one error line, or clap's usage message, on stderr\n{out}"
        );
    }
    let text = log.text();
    let records: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let err = records.iter().find(|r| r["level"] == "error");
    let err = err.unwrap_or_else(|| panic!("{what}: no JSON error record in the --log file:\n{text}\n{out}"));
    assert!(
        err["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: error record without msg: {err}"
    );
    assert!(
        err["time"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: error record without time: {err}"
    );
    if rt.is_vessel() {
        assert!(
            text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()),
            "{what}: the --log file has lines that are not JSON:\n{text}"
        );
    }
}

fn create_logged(rt: &Runtime, log: &Log, bundle: &Path, id: &str) -> Out {
    let bundle = bundle.to_string_lossy().into_owned();
    exec_logged(rt, log, &["create", "--bundle", &bundle, id])
}

/// Creates from `b` (config written) and checks a clean rejection.
fn reject_bundle(rt: &Runtime, b: &Bundle, write: bool, what: &str) {
    if write {
        b.write_config();
    }
    let log = Log::new();
    let id = rt.new_id();
    let g = rt.guard(&id);
    let out = create_logged(rt, &log, b.path(), &id);
    check_rejected(rt, &out, &log, what);
    drop(g);
    assert_nothing_left(rt, b, what);
}

conformance!(bad_config_malformed, |rt: &Runtime| {
    let b = Bundle::new();
    b.write_raw_config("{ \"ociVersion\": \"1.0.2\", \"process\": ");
    reject_bundle(rt, &b, false, "create with a truncated config.json");
    b.write_raw_config("[1, 2, 3]");
    reject_bundle(rt, &b, false, "create with a config.json that is not an object");
});

conformance!(bad_config_missing, |rt: &Runtime| {
    let b = Bundle::new();
    let _ = std::fs::remove_file(b.path().join("config.json"));
    reject_bundle(rt, &b, false, "create with no config.json");
});

// An ociVersion whose major version the runtime does not implement. runc 1.1 accepts any version
// string, so this fails on runc.
conformance!(
    bad_config_unknown_major_version,
    runc_differs = "runc 1.1.5 does not check ociVersion",
    |rt: &Runtime| {
        let mut b = Bundle::new();
        b.oci_version("9.0.0").args(&["true"]);
        reject_bundle(rt, &b, true, "create with ociVersion 9.0.0");
    }
);

conformance!(bad_bundle_missing, |rt: &Runtime| {
    let log = Log::new();
    let missing = format!(
        "/nonexistent-vessel-bundle-{}-{}",
        std::process::id(),
        next_counter()
    );
    let id = rt.new_id();
    let _g = rt.guard(&id);
    let out = create_logged(rt, &log, Path::new(&missing), &id);
    check_rejected(rt, &out, &log, "create with a missing bundle directory");
    assert!(
        rt.state_entries().is_empty(),
        "state left: {:?}",
        rt.state_entries()
    );
    assert!(!Path::new(&missing).exists());
});

conformance!(bad_signal, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.args(&["sleep", "30"]);
    let c = rt.create_container(&b);
    c.start().assert_ok("start");
    for sig in ["SIGFOO", "FOO", "99", "-1"] {
        let log = Log::new();
        let out = exec_logged(rt, &log, &["kill", &c.id, sig]);
        check_rejected(rt, &out, &log, &format!("kill with signal {sig:?}"));
        assert_eq!(
            c.status().as_deref(),
            Some("running"),
            "a bad kill affected the container"
        );
    }
});

conformance!(bad_duplicate_id, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.args(&["sleep", "30"]);
    let c = rt.create_container(&b);
    let before = c.state();
    let mut other = Bundle::new();
    other.args(&["true"]);
    other.write_config();
    let log = Log::new();
    let out = create_logged(rt, &log, other.path(), &c.id);
    check_rejected(rt, &out, &log, "create with an id that already exists");
    assert_eq!(c.state(), before, "the existing container changed");
    assert_eq!(rt.state_entries(), vec![c.id.clone()], "unexpected state entries");
    let left = Leftovers::of_paths(rt, other.path(), &other.cgroups_path());
    assert!(
        left.mounts.is_empty() && left.cgroups.is_empty() && left.processes.is_empty(),
        "{left:#?}"
    );
});

conformance!(bad_unknown_id, |rt: &Runtime| {
    let id = rt.new_id();
    for args in [
        vec!["start", &id],
        vec!["state", &id],
        vec!["kill", &id, "KILL"],
        vec!["delete", &id],
    ] {
        let log = Log::new();
        let out = exec_logged(rt, &log, &args);
        check_rejected(
            rt,
            &out,
            &log,
            &format!("{args:?} on a container that does not exist"),
        );
    }
    assert!(
        rt.state_entries().is_empty(),
        "state left: {:?}",
        rt.state_entries()
    );
});

// Ids that are not valid ("not valid in any other way" MUST be an error), in particular ones that would
// put state outside --root.
conformance!(bad_id_format, |rt: &Runtime| {
    let mut b = Bundle::new();
    b.args(&["true"]);
    b.write_config();
    let escape = format!("vessel-escape-id-{}-{}", std::process::id(), next_counter());
    let outside = rt.root().parent().unwrap().join(&escape);
    for id in [
        format!("../{escape}"),
        "a/b".to_string(),
        "..".to_string(),
        String::new(),
    ] {
        let log = Log::new();
        let g = rt.guard(&id);
        let out = create_logged(rt, &log, b.path(), &id);
        out.assert_fail(&format!("create with id {id:?}"));
        drop(g);
        assert!(
            !outside.exists(),
            "state written outside --root: {}",
            outside.display()
        );
        assert_nothing_left(rt, &b, &format!("after create with id {id:?}"));
    }
});

/// Cleans a host path a broken runtime may have mounted on or created, then panics if it had to.
fn assert_host_untouched(p: &Path, what: &str) {
    let mounted = host::mount_points_under(p);
    let existed = p.exists();
    for m in &mounted {
        let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
    assert!(
        mounted.is_empty(),
        "{what}: mount landed on the host at {mounted:?}"
    );
    assert!(!existed, "{what}: created {} on the host", p.display());
}

/// For a config whose mount destination goes through a symlink: the runtime either rejects it cleanly,
/// or creates the container with the mount inside the rootfs at `inside`; never on the host at
/// `host_path`.
fn symlink_case(rt: &Runtime, b: &Bundle, dest_inside: &str, host_path: &Path, what: &str) {
    b.write_config();
    let log = Log::new();
    let id = rt.new_id();
    let g = rt.guard(&id);
    let out = create_logged(rt, &log, b.path(), &id);
    let host_check = |label: &str| assert_host_untouched(host_path, &format!("{what} ({label})"));
    if out.success() {
        let pid = rt.state(&id)["pid"].as_i64().unwrap_or(0);
        let mi =
            parse_mountinfo(&std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default());
        host_check("created");
        assert!(
            mi.iter().any(|m| m.mount_point == Path::new(dest_inside)),
            "{what}: created, but no mount at {dest_inside} inside the container"
        );
    } else {
        check_rejected(rt, &out, &log, what);
    }
    drop(g);
    host_check("after delete");
    assert_nothing_left(rt, b, what);
}

// rootfs/etc is a symlink to the host's /etc; a mount under /etc must not reach the host's /etc.
conformance!(bad_rootfs_symlink_outside, |rt: &Runtime| {
    let mut b = Bundle::new();
    let etc = b.host_path("/etc");
    std::fs::remove_dir_all(&etc).unwrap();
    std::os::unix::fs::symlink("/etc", &etc).unwrap();
    let name = format!("vessel-conformance-{}-{}", std::process::id(), next_counter());
    b.add_mount(&format!("/etc/{name}"), "tmpfs", "tmpfs", &["size=64k"])
        .args(&["true"]);
    symlink_case(
        rt,
        &b,
        &format!("/etc/{name}"),
        &Path::new("/etc").join(&name),
        "mount under a rootfs symlink to /etc",
    );
});

// rootfs/escape -> ../../../../../../tmp/<dir>: a mount at /escape/foo must resolve inside the rootfs.
conformance!(bad_mount_symlink_escape, |rt: &Runtime| {
    let mut b = Bundle::new();
    let name = format!("vessel-escape-{}-{}", std::process::id(), next_counter());
    let host_dir = Path::new("/tmp").join(&name);
    std::fs::create_dir_all(&host_dir).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            tempdir::remove_tree_safely(&self.0);
        }
    }
    let _rm = Rm(host_dir.clone());
    std::os::unix::fs::symlink(
        format!("../../../../../../../../tmp/{name}"),
        b.host_path("/escape"),
    )
    .unwrap();
    b.add_mount("/escape/foo", "tmpfs", "tmpfs", &["size=64k"])
        .args(&["true"]);
    symlink_case(
        rt,
        &b,
        &format!("/tmp/{name}/foo"),
        &host_dir.join("foo"),
        "mount through a symlink leaving the rootfs",
    );
});
