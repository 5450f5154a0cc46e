//! vessel-vmm as a user runs it: hand-made ELF guests booted through the command line, the exit
//! status for power-off and reset, and one clear error line for each thing a user can get wrong.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use vessel_vmm::handmade::{
    elf_kernel, load_byte_at_ebx, power_off, print, print_al, pvh_elf_kernel, reset, spin, triple_fault,
};
use vessel_vmm::kvm::Flavour;

mod common;
use common::Scratch;

fn vmm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"));
    cmd.stdin(Stdio::null());
    cmd
}

/// Hand-made guests need the PVM opt-in where /dev/kvm is kvm-pvm (they are valid PVM guests).
fn boot(kernel: &Path, extra: &[&str]) -> Output {
    let mut cmd = vmm();
    cmd.arg("--kernel").arg(kernel).args(extra);
    for (flag, default) in [("--memory", "32"), ("--serial", "stdio")] {
        if !extra.contains(&flag) {
            cmd.args([flag, default]);
        }
    }
    if Flavour::detect() == Flavour::Pvm {
        cmd.arg("--pvm-guest-kernel");
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One line on stderr naming the problem, and the given status.
fn assert_one_line_error(out: &Output, status: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(status), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(
        err.starts_with("vessel-vmm: ") && err.contains(needle),
        "{needle:?} in {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn guest_output_and_power_off_exit_zero() {
    let dir = Scratch::new("cli", "poweroff");
    let kernel = dir.file("k", &elf_kernel(&[print(b"hello, vmm\n"), power_off()].concat()));
    let out = boot(&kernel, &["--cpus", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, vmm\n");
    assert_eq!(stderr(&out).trim(), "vessel-vmm: guest powered off");
}

#[test]
fn pvh_entry_is_used_when_the_elf_announces_it() {
    // 32-bit protected mode, EBX = hvm_start_info: the guest prints the magic's low byte.
    let dir = Scratch::new("cli", "pvh");
    let code = [load_byte_at_ebx(), print_al(), print(b"/pvh\n"), power_off()].concat();
    let kernel = dir.file("k", &pvh_elf_kernel(&code));
    let out = boot(&kernel, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x/pvh\n");
}

#[test]
fn guest_reset_is_reported_with_status_3() {
    let dir = Scratch::new("cli", "reset");
    let kernel = dir.file("k", &elf_kernel(&reset()));
    let out = boot(&kernel, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("guest reset (reboot, via i8042 reset)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_triple_fault_is_a_reset_and_says_where_the_vcpu_was() {
    let dir = Scratch::new("cli", "triple-fault");
    let kernel = dir.file("k", &elf_kernel(&triple_fault()));
    let out = boot(&kernel, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("guest reset (reboot, via triple fault)"), "{err}");
    // Long mode with the boot page tables: the state line names the registers that locate it.
    let line = err
        .lines()
        .find(|l| l.contains("vCPU 0 triple fault: rip=0x"))
        .unwrap_or_else(|| panic!("no register line: {err}"));
    for register in ["rsp=", "cr0=0x", "cr3=0x", "cr4=0x", "efer=0x"] {
        assert!(line.contains(register), "{register} missing: {line}");
    }
}

#[test]
fn serial_to_a_file_and_json_config() {
    let dir = Scratch::new("cli", "config");
    let kernel = dir.file("k", &elf_kernel(&[print(b"to a file"), power_off()].concat()));
    let log = dir.0.join("console.log");
    let config = serde_json::json!({
        "kernel": kernel, "memory_mib": 32, "cpus": 1, "serial": format!("file:{}", log.display()),
        "pvm_guest_kernel": Flavour::detect() == Flavour::Pvm,
    });
    let config_path = dir.file("vm.json", config.to_string().as_bytes());
    let out = vmm().arg("--config").arg(&config_path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "to a file");
    assert!(out.stdout.is_empty());

    let bad = dir.file("bad.json", br#"{"kernel": "/k", "vcpus": 2}"#);
    let out = vmm().arg("--config").arg(&bad).output().unwrap();
    assert_one_line_error(&out, 2, "unknown field `vcpus`");
}

#[test]
fn ready_fd_is_written_before_the_guest_runs() {
    let dir = Scratch::new("cli", "ready");
    let kernel = dir.file("k", &elf_kernel(&power_off()));
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
    let out = boot(&kernel, &["--ready-fd", &fds[1].to_string()]);
    // SAFETY: both descriptors are ours; the write end is closed so read sees end of file.
    unsafe { libc::close(fds[1]) };
    let mut buf = [0u8; 16];
    // SAFETY: reading into a local buffer of the given length.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fds[0]) };
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(&buf[..n as usize], b"ready\n");
}

#[test]
fn user_mistakes_get_one_clear_line() {
    let dir = Scratch::new("cli", "mistakes");
    let garbage = dir.file("garbage", &[0x42; 4096]);
    assert_one_line_error(&boot(&garbage, &[]), 1, "is not a kernel");
    assert_one_line_error(&boot(&dir.0.join("nope"), &[]), 1, "does not exist");
    let kernel = dir.file("k", &elf_kernel(&power_off()));
    assert_one_line_error(&boot(&kernel, &["--memory", "8"]), 1, "too small");
    assert_one_line_error(&boot(&kernel, &["--memory", "100000000"]), 1, "exceeds this host");
    assert_one_line_error(&boot(&kernel, &["--cpus", "0"]), 1, "1 to 254 vCPUs");
    assert_one_line_error(
        &boot(&kernel, &["--disk", "/nonexistent.img"]),
        1,
        "/nonexistent.img",
    );
    assert_one_line_error(&boot(&kernel, &["--disk", "/x,bogus"]), 2, "Invalid disk");
    assert_one_line_error(
        &boot(&kernel, &["--serial", "tty"]),
        2,
        "stdio, none or file:PATH",
    );
    assert_one_line_error(&boot(&kernel, &["--initrd", "/nonexistent.cpio"]), 1, "Initramfs");
    assert_one_line_error(&vmm().arg("--frobnicate").output().unwrap(), 2, "--frobnicate");
    let big_initrd = dir.file("initrd", &vec![0u8; 40 << 20]);
    let out = boot(&kernel, &["--initrd", big_initrd.to_str().unwrap()]);
    assert_one_line_error(&out, 1, "does not fit in guest memory");
}

#[test]
fn a_disk_in_use_by_another_vm_is_refused() {
    let dir = Scratch::new("cli", "lock");
    let disk = dir.file("disk.img", &vec![0u8; 1 << 20]);
    let spinner = dir.file("spin", &elf_kernel(&[print(b"up"), spin()].concat()));
    let mut first = vmm();
    first
        .arg("--kernel")
        .arg(&spinner)
        .args(["--memory", "32", "--disk"])
        .arg(&disk)
        .stdout(Stdio::piped());
    if Flavour::detect() == Flavour::Pvm {
        first.arg("--pvm-guest-kernel");
    }
    let mut first = first.spawn().unwrap();
    // Once the guest printed, the first VM holds its disk lock.
    let mut up = [0u8; 2];
    std::io::Read::read_exact(first.stdout.as_mut().unwrap(), &mut up).unwrap();
    let kernel = dir.file("k", &elf_kernel(&power_off()));
    let second = boot(&kernel, &["--disk", disk.to_str().unwrap()]);
    let read_only = boot(&kernel, &["--disk", &format!("{},ro", disk.display())]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_one_line_error(&second, 1, "in use by another VM");
    assert_one_line_error(&read_only, 1, "in use by another VM");
    assert_eq!(
        boot(&kernel, &["--disk", disk.to_str().unwrap()]).status.code(),
        Some(0),
        "lock released"
    );
}

#[test]
fn stock_kernels_on_kvm_pvm_get_the_explanation() {
    let dir = Scratch::new("cli", "pvm");
    let kernel = dir.file("k", &elf_kernel(&power_off()));
    let out = vmm().arg("--kernel").arg(&kernel).output().unwrap();
    match Flavour::detect() {
        Flavour::Pvm => assert_one_line_error(&out, 1, "kvm-pvm"),
        Flavour::Hardware => assert_eq!(out.status.code(), Some(0), "{}", stderr(&out)),
    }
}

#[test]
fn no_dev_kvm_is_explained() {
    let dir = Scratch::new("cli", "nokvm");
    let kernel = dir.file("k", &elf_kernel(&power_off()));
    // A private mount namespace whose /dev has no kvm node.
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs none /dev && exec "$0" --kernel "$1" --memory 32 --pvm-guest-kernel"#)
        .arg(env!("CARGO_BIN_EXE_vessel-vmm"))
        .arg(&kernel)
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux) is needed for this test");
    assert_one_line_error(&out, 1, "/dev/kvm does not exist");
}

#[test]
fn nics_and_vsock_are_created_for_the_vm() {
    let dir = Scratch::new("cli", "net");
    let kernel = dir.file("k", &elf_kernel(&[print(b"up"), spin()].concat()));
    let uds = dir.0.join("v.sock");
    // A private network namespace, so the taps never touch the host's network.
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", env!("CARGO_BIN_EXE_vessel-vmm"), "--kernel"])
        .arg(&kernel)
        .args([
            "--memory",
            "32",
            "--net",
            "tap=vtest0,mac=52:54:00:00:00:01",
            "--net",
            "tap=vtest1",
        ])
        .arg("--vsock")
        .arg(format!("cid=3,path={}", uds.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if Flavour::detect() == Flavour::Pvm {
        cmd.arg("--pvm-guest-kernel");
    }
    let mut child = cmd.spawn().expect("unshare (util-linux) is needed for this test");
    let mut up = [0u8; 2];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut up).unwrap();
    let links = Command::new("nsenter")
        .args(["-t", &child.id().to_string(), "-n", "ip", "-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    let sock_exists = uds.exists();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(links.contains("vtest0") && links.contains("vtest1"), "{links}");
    assert!(sock_exists, "the vsock host socket listens at {}", uds.display());
    assert_one_line_error(&boot(&kernel, &["--net", "tap=x,mac=zz"]), 2, "Invalid MAC");
    assert_one_line_error(
        &boot(&kernel, &["--vsock", "cid=1,path=/tmp/x.sock"]),
        1,
        "guest CID 1 is reserved",
    );
}

#[test]
fn metrics_path_gets_every_devices_counters_when_the_vm_ends() {
    let dir = Scratch::new("cli", "metrics");
    let kernel = dir.file("k", &elf_kernel(&[print(b"up\n"), power_off()].concat()));
    let metrics = dir.0.join("metrics.json");
    // A private network namespace, so the tap never touches the host's network.
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", env!("CARGO_BIN_EXE_vessel-vmm"), "--kernel"])
        .arg(&kernel)
        .args(["--memory", "32", "--serial", "stdio", "--net", "tap=vmetric0"])
        .arg("--metrics-path")
        .arg(&metrics)
        .stdin(Stdio::null());
    if Flavour::detect() == Flavour::Pvm {
        cmd.arg("--pvm-guest-kernel");
    }
    let out = cmd
        .output()
        .expect("unshare (util-linux) is needed for this test");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&metrics).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["exit"], "guest powered off", "{text}");
    let devices = json["devices"].as_array().unwrap();
    let kinds: Vec<&str> = devices.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["net", "rng"], "{text}");
    let nic = &devices[0];
    assert_eq!(nic["id"], "vmetric0", "{text}");
    // This guest never drives its devices.
    for counter in [
        "notifications",
        "interrupts",
        "tx_frames",
        "tx_bytes",
        "rx_frames",
        "rx_dropped",
    ] {
        assert_eq!(nic[counter], 0, "{counter} in {text}");
    }
    assert_one_line_error(
        &boot(&kernel, &["--metrics-path", "/nonexistent/dir/metrics.json"]),
        2,
        "--metrics-path /nonexistent/dir/metrics.json",
    );
}
