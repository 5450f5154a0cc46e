//! `vessel run` end to end: import the bundled busybox image, run commands with limits, clean up.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Env {
    root: PathBuf,
    runtime_root: PathBuf,
}

impl Env {
    fn new(tag: &str) -> Env {
        let base = std::env::temp_dir().join(format!("vessel-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let env = Env {
            root: base.join("root"),
            runtime_root: base.join("rt"),
        };
        let rootfs = base.join("rootfs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
        assert!(
            Command::new(script).arg(&rootfs).status().unwrap().success(),
            "busybox-rootfs"
        );
        let out = env.vessel(&[
            "image",
            "import",
            "--change",
            "CMD [\"sh\"]",
            &rootfs.display().to_string(),
            "t/busybox",
        ]);
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    fn vessel(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_vessel"))
            .arg("--root")
            .arg(&self.root)
            .arg("--runtime-root")
            .arg(&self.runtime_root)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.root.parent().unwrap());
    }
}

#[test]
fn run_rm_echo_hello_and_nothing_left() {
    let e = Env::new("hello");
    let out = e.vessel(&["run", "--rm", "t/busybox", "echo", "hello"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let left: Vec<_> = std::fs::read_dir(e.root.join("containers")).unwrap().collect();
    assert!(left.is_empty(), "container dirs left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&e.root.display().to_string()), "mount left");
}

#[test]
fn run_applies_env_user_limits_and_exit_code() {
    let e = Env::new("limits");
    let out = e.vessel(&[
        "run", "--rm", "-e", "GREETING=hi", "--user", "65534", "--memory", "64m", "--pids-limit", "33", "t/busybox",
        "sh", "-c", "echo $GREETING; id -u; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec!["hi", "65534", &(64u64 << 20).to_string(), "33"],
        "{text}"
    );
}

#[test]
fn kept_container_is_listed_and_removed() {
    let e = Env::new("keep");
    let out = e.vessel(&["run", "--name", "keepme", "t/busybox", "true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ps = e.vessel(&["ps", "-a"]);
    assert!(String::from_utf8_lossy(&ps.stdout).contains("keepme"));
    assert!(e.vessel(&["rm", "keepme"]).status.success());
    assert!(!e.root.join("containers/keepme").exists());
    let ps = e.vessel(&["ps", "-a"]);
    assert!(!String::from_utf8_lossy(&ps.stdout).contains("keepme"));
}

#[test]
fn unknown_image_is_one_clear_error() {
    let e = Env::new("unknown");
    let out = e.vessel(&["run", "--rm", "no/such:image", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no/such:image") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn every_image_command_speaks_json() {
    let e = Env::new("json");
    let parse = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let out = e.vessel(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!(
                "{args:?} printed no JSON ({err}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    let images = parse(&["images"]);
    assert_eq!(images[0]["name"], "docker.io/t/busybox:latest");
    assert_eq!(parse(&["tag", "t/busybox", "t/other:1"])["name"], "t/other:1");
    let inspected = parse(&["image", "inspect", "t/other:1"]);
    assert_eq!(inspected[0]["Id"], images[0]["id"]);
    let archive = e.root.parent().unwrap().join("saved.tar");
    let archive = archive.display().to_string();
    parse(&["save", "-o", &archive, "t/other:1"]);
    assert_eq!(parse(&["rmi", "t/other:1"])["untagged"][0], "t/other:1");
    assert_eq!(parse(&["load", "-i", &archive])[0]["name"], "docker.io/t/other:1");
    assert_eq!(
        parse(&["image", "unpack", "t/other:1"])[0]["layers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(parse(&["image", "prune"])["blobs_removed"].is_number());
    assert!(parse(&["ps", "-a"]).is_array());
}

#[test]
fn run_it_gives_the_container_a_terminal() {
    let e = Env::new("tty");
    // `script` gives vessel a real terminal, as a person at a shell would.
    let cmd = format!(
        "{} --root {} --runtime-root {} run -it --rm t/busybox sh -c 'tty; read line; echo got:$line'",
        env!("CARGO_BIN_EXE_vessel"),
        e.root.display(),
        e.runtime_root.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (bsdutils) runs");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"typed\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("/dev/pts/"), "no terminal in the container: {text}");
    assert!(
        text.contains("got:typed"),
        "input did not reach the container: {text}"
    );
}
