//! vessel-vmm's seccomp filters in the real binary: a guest runs to power-off under them, every
//! thread carries its filters, and a forbidden call made by a thread of each kind (the hidden
//! VESSEL_VMM_SECCOMP_SELFTEST hook) kills the process with SIGSYS and a line naming the kind.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use vessel_vmm::handmade::{elf_kernel, power_off, print, spin};
use vessel_vmm::kvm::Flavour;
use vessel_vmm::seccomp::SELFTEST_ENV;

mod common;
use common::{without_core_file, Scratch};

/// The VMM on `kernel` with a 32 MiB guest; no core file when it dies of SIGSYS.
fn vmm(kernel: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"));
    cmd.arg("--kernel")
        .arg(kernel)
        .args(["--memory", "32"])
        .args(extra);
    if Flavour::detect() == Flavour::Pvm {
        cmd.arg("--pvm-guest-kernel");
    }
    cmd.stdin(Stdio::null()).env_remove(SELFTEST_ENV);
    without_core_file(&mut cmd);
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn hello_then_power_off(dir: &Scratch) -> PathBuf {
    dir.file("k", &elf_kernel(&[print(b"hello\n"), power_off()].concat()))
}

/// The child's output once it exited, or after `limit` (then killed, so a test fails instead of hanging).
fn wait_at_most(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// Asserts the process died of SIGSYS after naming `kind`.
fn assert_killed_in(out: &Output, kind: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "status {:?}, stderr {err}",
        out.status
    );
    let expected = format!(
        "vessel-vmm: seccomp: a {kind} thread made forbidden system call {}",
        libc::SYS_execve
    );
    assert!(err.contains(&expected), "{expected:?} in {err:?}");
}

#[test]
fn a_guest_runs_to_power_off_under_the_filters() {
    let dir = Scratch::new("seccomp", "poweroff");
    let kernel = hello_then_power_off(&dir);
    let out = vmm(&kernel, &["--seccomp", "on", "--cpus", "2", "--serial", "stdio"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

#[test]
fn a_forbidden_call_on_a_vcpu_thread_kills_the_vmm() {
    let dir = Scratch::new("seccomp", "vcpu");
    let kernel = hello_then_power_off(&dir);
    let out = vmm(&kernel, &["--serial", "none"])
        .env(SELFTEST_ENV, "vcpu")
        .output()
        .unwrap();
    assert_killed_in(&out, "vcpu");
}

#[test]
fn a_forbidden_call_on_the_api_thread_kills_the_vmm() {
    let dir = Scratch::new("seccomp", "api");
    // A guest that never powers off: with one that does, the guest's power-off could end the VMM (status 0)
    // between the API thread's report and its SIGSYS (seen once on a loaded machine).
    let kernel = dir.file("k", &elf_kernel(&spin()));
    let socket = dir.0.join("api.sock");
    let child = vmm(
        &kernel,
        &["--serial", "none", "--api-sock", socket.to_str().unwrap()],
    )
    .env(SELFTEST_ENV, "api")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let out = wait_at_most(child, Duration::from_secs(60));
    assert_killed_in(&out, "api");
}

#[test]
fn a_forbidden_call_on_the_main_or_a_device_thread_kills_the_vmm() {
    let dir = Scratch::new("seccomp", "main-device");
    let kernel = hello_then_power_off(&dir);
    let out = vmm(&kernel, &["--serial", "none"])
        .env(SELFTEST_ENV, "vmm")
        .output()
        .unwrap();
    assert_killed_in(&out, "vmm");
    // The console input feeder is a device thread.
    let out = vmm(&kernel, &["--serial", "stdio"])
        .env(SELFTEST_ENV, "device")
        .output()
        .unwrap();
    assert_killed_in(&out, "device");
}

#[test]
fn seccomp_off_installs_nothing() {
    let dir = Scratch::new("seccomp", "off");
    let kernel = hello_then_power_off(&dir);
    let out = vmm(&kernel, &["--seccomp", "off", "--serial", "none"])
        .env(SELFTEST_ENV, "vcpu")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = vmm(&kernel, &["--seccomp", "maybe"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Each thread's name and its `Seccomp_filters` count from /proc.
fn thread_filters(child: &Child) -> Vec<(String, u32)> {
    let tasks = format!("/proc/{}/task", child.id());
    let mut found = Vec::new();
    for task in std::fs::read_dir(tasks).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let filters = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        found.push((comm.trim().to_owned(), filters));
    }
    found.sort();
    found
}

#[test]
fn every_thread_runs_under_its_own_filter() {
    let dir = Scratch::new("seccomp", "threads");
    let kernel = dir.file("k", &elf_kernel(&spin()));
    let socket = dir.0.join("api.sock");
    let socket = socket.to_str().unwrap();
    let mut child = vmm(
        &kernel,
        &["--serial", "none", "--cpus", "2", "--api-sock", socket],
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let threads = loop {
        let threads = thread_filters(&child);
        let filtered = |prefix: &str| {
            threads
                .iter()
                .filter(|(n, f)| n.starts_with(prefix) && *f >= 2)
                .count()
        };
        if filtered("vcpu") == 2 && filtered("api") == 1 || Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Killed before any assertion, so a failure leaves no VMM behind.
    let _ = child.kill();
    let _ = child.wait();
    // The main thread adds its list; the threads it starts inherit it and add their own.
    let filters = |name: &str| threads.iter().find(|(n, _)| n == name).map(|&(_, f)| f);
    assert_eq!(filters("vessel-vmm"), Some(1), "{threads:?}");
    assert_eq!(filters("api"), Some(2), "{threads:?}");
    assert_eq!(filters("vcpu0"), Some(2), "{threads:?}");
    assert_eq!(filters("vcpu1"), Some(2), "{threads:?}");
    // The entropy device's queue worker.
    assert_eq!(filters("virtio-0"), Some(2), "{threads:?}");
}
