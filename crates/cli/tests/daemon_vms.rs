//! VM instances (kind vm) under a real vesseld, natively: raw VMs that boot hand-made guest kernels (they
//! run on any /dev/kvm, kvm-pvm included) through the same verbs as containers. A VM's console is its
//! stdio and log; it is stopped by its power button; its network interface is a tap on its network's
//! bridge, addressed from the network's IPAM and handed to vessel-vmm.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::Daemon;
use vessel_vmm::handmade::{elf_kernel, power_off, print, reset, spin, wait_for_power_button};

/// Fails (with the reason) where the machine cannot run VMs.
fn kvm() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "these tests run microVMs: /dev/kvm is missing (load kvm, or run them on a host with KVM)"
    );
}

/// The flags that make vesseld boot a hand-made kernel as a VM here.
fn vm_flags(kernel: &Path) -> Vec<String> {
    let mut f = vec![
        "--vm".to_string(),
        "--kernel".into(),
        kernel.display().to_string(),
    ];
    // Hand-made guests are PVM-clean; on kvm-pvm they must be booted as PVM guests.
    if Path::new("/sys/module/kvm_pvm").exists() {
        f.push("--pvm-guest-kernel".into());
    }
    f
}

fn kernel(d: &Daemon, name: &str, code: &[u8]) -> PathBuf {
    let path = d.base.join(name);
    std::fs::write(&path, elf_kernel(code)).unwrap();
    path
}

/// `vessel run` with the VM flags and then `extra`.
fn run_args<'a>(flags: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["run"];
    a.extend(flags.iter().map(String::as_str));
    a.extend(extra);
    a
}

/// `ip -o link show` of vesseld's network namespace (where its bridges and taps are).
fn daemon_links(d: &Daemon) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", d.base.join("host.netns").display()))
        .args(["ip", "-o", "link", "show"])
        .output()
        .expect("nsenter (util-linux) and ip (iproute2) are needed for this test");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn raw_vm_in_the_foreground_prints_its_console_and_exits_with_its_guests_status() {
    kvm();
    let d = Daemon::start("vmfg");
    let hello = kernel(&d, "hello", &[print(b"hello from a vm\n"), power_off()].concat());
    let flags = vm_flags(&hello);

    let out = d.vessel(&run_args(&flags, &["--name", "hello", "--network", "none"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("hello from a vm"),
        "the console reaches the terminal: {stdout:?}"
    );
    let inst = d.inspect("hello");
    assert_eq!(inst["kind"], "vm");
    assert_eq!(inst["state"]["status"], "exited");
    assert_eq!(inst["state"]["exit_code"], 0);
    assert!(
        d.ok(&["logs", "hello"]).contains("hello from a vm"),
        "the console is the log"
    );
    assert!(
        d.ok(&["ps", "-a"])
            .lines()
            .any(|l| l.contains("hello") && l.contains("vm:hello")),
        "ps lists VMs with containers"
    );

    // A guest that resets ends with vessel-vmm's status for a reset (3), and so does `run`.
    let resetting = kernel(&d, "reset", &[print(b"bye\n"), reset()].concat());
    let flags = vm_flags(&resetting);
    let out = d.vessel(&run_args(&flags, &["--rm", "--network", "none"]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Started again, a VM boots again: its log has both runs.
    d.ok(&["start", "hello"]);
    d.until(10, "hello's second run", || d.status("hello") == "exited");
    assert_eq!(d.ok(&["logs", "hello"]).matches("hello from a vm").count(), 2);
    d.assert_clean_after_rm_all();
}

#[test]
fn raw_vm_on_a_network_has_a_tap_on_its_bridge_and_answers_the_verbs() {
    kvm();
    let d = Daemon::start("vmnet");
    let guest = kernel(
        &d,
        "button",
        &[
            print(b"up\n"),
            wait_for_power_button(),
            print(b"bye\n"),
            power_off(),
        ]
        .concat(),
    );
    let flags = vm_flags(&guest);
    d.ok(&["network", "create", "vnet", "--subnet", "10.98.0.0/24"]);
    d.ok(&["network", "create", "other", "--subnet", "10.97.0.0/24"]);
    d.ok(&run_args(
        &flags,
        &[
            "-d",
            "--name",
            "vm1",
            "--network",
            "vnet",
            "-p",
            "8089:80",
            "--memory",
            "64m",
            "--cpus",
            "2",
        ],
    ));
    d.until(10, "vm1's console", || d.ok(&["logs", "vm1"]).contains("up"));

    // Addressed from the network's IPAM, handed to vessel-vmm as a tap on the bridge.
    let inst = d.inspect("vm1");
    assert_eq!(inst["kind"], "vm");
    let att = &inst["networks"][0];
    let ip = att["ip"].as_str().expect("an IPv4 address");
    let ip = ip.split('/').next().unwrap().to_string();
    assert!(ip.starts_with("10.98.0."), "{att}");
    let mac = att["mac"].as_str().unwrap().to_string();
    let id = inst["id"].as_str().unwrap();
    let argv: Vec<String> =
        serde_json::from_slice(&std::fs::read(d.root.join("instances").join(id).join("vmm.json")).unwrap())
            .unwrap();
    let tap_arg = argv
        .iter()
        .find(|a| a.starts_with("tap="))
        .expect("a --net argument for the VMM");
    let tap = tap_arg
        .strip_prefix("tap=")
        .and_then(|t| t.split(',').next())
        .unwrap()
        .to_string();
    assert_eq!(tap_arg, &format!("tap={tap},mac={mac}"));
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.root.join("instances").join(id).join("boot.json")).unwrap())
            .unwrap();
    let cmdline = boot["boot_args"].as_str().unwrap();
    assert!(
        cmdline.contains(&format!("ip={ip}::10.98.0.1:255.255.255.0:")),
        "the kernel gets its address: {cmdline}"
    );
    assert!(argv.windows(2).any(|w| w == ["--memory", "64"]), "{argv:?}");
    assert!(argv.windows(2).any(|w| w == ["--cpus", "2"]), "{argv:?}");
    let pid = inst["state"]["pid"].as_i64().unwrap();
    let vmm_cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(vmm_cmdline.contains("vessel-vmm") && vmm_cmdline.contains(tap_arg.as_str()));
    let bridge = d.inspect_network("vnet")["link"].as_str().unwrap().to_string();
    let links = daemon_links(&d);
    let tap_line = links
        .lines()
        .find(|l| l.contains(&format!(" {tap}:")))
        .unwrap_or_else(|| panic!("tap {tap} in vesseld's namespace: {links}"));
    assert!(tap_line.contains(&format!("master {bridge}")), "{tap_line}");
    assert!(
        tap_line.contains("LOWER_UP"),
        "the VMM holds the tap open (carrier): {tap_line}"
    );
    assert!(
        d.ok(&["port", "vm1"]).contains("80/tcp -> 0.0.0.0:8089"),
        "{}",
        d.ok(&["port", "vm1"])
    );

    // What needs a guest agent says so; what needs a stopped VM says so.
    let err = d.fails(&["exec", "vm1", "true"]);
    assert!(err.contains("guest agent"), "{err}");
    let err = d.fails(&["network", "connect", "other", "vm1"]);
    assert!(err.contains("running VM"), "{err}");
    let err = d.fails(&["update", "--memory", "128m", "vm1"]);
    assert!(err.contains("running VM"), "{err}");

    // Pause and resume freeze its vCPUs through the VMM.
    d.ok(&["pause", "vm1"]);
    assert_eq!(d.status("vm1"), "paused");
    let (_, vmm_state) = support::api(
        &d.run.join("sup").join(format!("{}.vmm", &id[..16])),
        "GET",
        "/",
        "",
    );
    assert!(vmm_state.contains("Paused"), "{vmm_state}");
    d.ok(&["unpause", "vm1"]);
    assert_eq!(d.status("vm1"), "running");

    let stats = d.json("GET", "/1.0/instances/vm1/stats", "");
    assert!(stats["memory_usage"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert_eq!(stats["memory_limit"].as_u64(), Some(64 << 20), "{stats}");
    assert!(d.ok(&["top", "vm1"]).contains("vessel-vmm"));

    // stop presses the power button: this guest shuts down at once, with status 0.
    d.ok(&["stop", "vm1"]);
    let inst = d.inspect("vm1");
    assert_eq!(inst["state"]["status"], "exited");
    assert_eq!(inst["state"]["exit_code"], 0);
    assert!(d.ok(&["logs", "vm1"]).contains("bye"), "the guest saw the button");
    // The tap stays with the instance (as a container's veth does), without a carrier.
    assert!(!daemon_links(&d)
        .lines()
        .find(|l| l.contains(&format!(" {tap}:")))
        .unwrap_or("")
        .contains("LOWER_UP"));

    // While stopped it may change its size and join a network; started again it has both.
    d.ok(&["update", "--memory", "96m", "vm1"]);
    d.ok(&["network", "connect", "other", "vm1"]);
    d.ok(&["start", "vm1"]);
    let argv = std::fs::read_to_string(d.root.join("instances").join(id).join("vmm.json")).unwrap();
    assert!(argv.contains("\"--memory\",\"96\""), "{argv}");
    assert_eq!(argv.matches("tap=").count(), 2, "{argv}");
    d.ok(&["kill", "vm1"]);
    d.until(10, "vm1 killed", || d.status("vm1") == "exited");
    assert_eq!(d.inspect("vm1")["state"]["exit_code"], 137);

    d.ok(&["rm", "vm1"]);
    assert!(
        !daemon_links(&d).contains(&format!(" {tap}:")),
        "rm removes its taps"
    );
    d.ok(&["network", "rm", "vnet", "other"]);
    d.assert_clean_after_rm_all();
}

#[test]
fn a_vmm_killed_under_a_vm_is_an_exit_and_vms_survive_a_vesseld_restart() {
    kvm();
    let mut d = Daemon::start("vmkill");
    let spinner = kernel(&d, "spin", &[print(b"up\n"), spin()].concat());
    let flags = vm_flags(&spinner);
    d.ok(&run_args(&flags, &["-d", "--name", "a", "--network", "none"]));
    d.ok(&run_args(&flags, &["-d", "--name", "b"]));
    d.until(10, "a's console", || d.ok(&["logs", "a"]).contains("up"));

    let pid = d.inspect("a")["state"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    d.until(10, "a recorded as exited", || d.status("a") == "exited");
    assert_eq!(d.inspect("a")["state"]["exit_code"], 137);

    // vesseld killed and started again finds b still running, and its verbs still work.
    d.kill9();
    d.spawn();
    assert_eq!(d.status("b"), "running");
    d.ok(&["pause", "b"]);
    d.ok(&["unpause", "b"]);
    // This guest ignores its power button: stop kills it after the timeout.
    d.ok(&["stop", "-t", "1", "b"]);
    assert_eq!(d.inspect("b")["state"]["exit_code"], 137);
    d.assert_clean_after_rm_all();
}

#[test]
fn bad_vm_requests_get_one_clear_line_and_make_nothing() {
    kvm();
    let d = Daemon::start("vmbad");
    let guest = kernel(&d, "k", &[print(b"up\n"), power_off()].concat());
    let k = guest.display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["create", "--vm", "--kernel", &k, "--disk", "/x", support::IMAGE],
            "--disk is for raw VMs",
        ),
        (
            &["create", "--vm", "--kernel", &k, "--disk-size", "1g"],
            "--disk-size",
        ),
        (
            &[
                "create",
                "--vm",
                "--kernel",
                &k,
                "--volume",
                "/tmp:/x",
                support::IMAGE,
            ],
            "cannot take --volume",
        ),
        (
            &["create", "--vm", "--kernel", "/nonexistent/kernel"],
            "Cannot read /nonexistent/kernel",
        ),
        (
            &["create", "--vm", "--kernel", &k, "--user", "root"],
            "cannot take --user",
        ),
        (
            &["create", "--vm", "--kernel", &k, "--memory", "4m"],
            "at least 16 MiB",
        ),
        (
            &["create", "--vm", "--kernel", &k, "--cpus", "64"],
            "1 to 32 vCPUs",
        ),
        (
            &["create", "--vm", "--kernel", &k, "--network", "host"],
            "network mode host",
        ),
        (
            &["create", "--vm", "--kernel", &k, "--pids-limit", "10"],
            "other limits are for containers",
        ),
        (
            &["create", "--vm", "--kernel", &k, "--disk", "/x,rw"],
            "the only option is ro",
        ),
    ];
    for (args, needle) in cases {
        let err = d.fails(args);
        assert!(err.contains(needle), "vessel {args:?}: {err}");
    }
    // Debian's kernel cannot boot on kvm-pvm: a VM from an image says so there, and leaves nothing.
    if Path::new("/sys/module/kvm_pvm").exists() {
        let err = d.fails(&["run", "--vm", support::IMAGE, "true"]);
        assert!(err.contains("kvm-pvm"), "{err}");
    }
    // A usage error (--kernel without --vm) is clap's whole message.
    let out = d.vessel(&["create", "--kernel", &k]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--vm"));
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
    d.assert_clean_after_rm_all();
}

#[test]
fn vms_from_one_image_share_its_disk_and_a_guest_without_an_agent_times_out() {
    kvm();
    assert!(
        support::static_agent().is_some(),
        "VMs made from images need the static guest agent: run scripts/build-agent first"
    );
    let d = Daemon::start_with("vmimg", &["--vm-boot-timeout", "3"]);
    // A hand-made kernel instead of Debian's (which kvm-pvm cannot boot): it boots, but runs no agent.
    let spinner = kernel(&d, "spin", &[print(b"up\n"), spin()].concat());
    let flags = vm_flags(&spinner);
    let mut create = vec!["create"];
    create.extend(flags.iter().map(String::as_str));
    let mut first = create.clone();
    first.extend([
        "--name",
        "img1",
        "--network",
        "none",
        "--disk-size",
        "64m",
        support::IMAGE,
        "echo",
        "hi",
    ]);
    d.ok(&first);

    let disks: Vec<_> = std::fs::read_dir(d.root.join("vm-disks"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(disks.len(), 1, "one read-only disk for the image");
    let base = disks[0].path();
    let before = std::fs::metadata(&base).unwrap();
    let id = d.inspect("img1")["id"].as_str().unwrap().to_string();
    let dir = d.root.join("instances").join(&id);
    let data = std::fs::metadata(dir.join("data.ext4")).unwrap();
    assert_eq!(data.len(), 64 << 20);
    use std::os::unix::fs::MetadataExt;
    assert!(data.blocks() * 512 < 16 << 20, "the writable disk is sparse");

    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("agent.json")).unwrap()).unwrap();
    assert_eq!(plan["process"]["args"], serde_json::json!(["echo", "hi"]));
    assert!(plan["process"]["env"].to_string().contains("PATH="), "{plan}");
    assert_eq!(plan["boot_timeout_secs"], 3);
    let argv = std::fs::read_to_string(dir.join("vmm.json")).unwrap()
        + &std::fs::read_to_string(dir.join("boot.json")).unwrap();
    for needle in [
        format!("{},ro", base.display()),
        dir.join("data.ext4").display().to_string(),
        "vessel.root=/dev/vda vessel.data=/dev/vdb".to_string(),
        "--vsock".to_string(),
        format!("file:{}", dir.join("console.log").display()),
        dir.join("initramfs.img").display().to_string(),
    ] {
        assert!(argv.contains(&needle), "{needle} in {argv}");
    }

    // A second VM of the image copies none of its bytes: the same disk, not rebuilt.
    let mut second = create.clone();
    second.extend(["--name", "img2", "--network", "none", support::IMAGE]);
    d.ok(&second);
    let after = std::fs::metadata(&base).unwrap();
    assert_eq!((before.ino(), before.mtime()), (after.ino(), after.mtime()));
    assert_eq!(std::fs::read_dir(d.root.join("vm-disks")).unwrap().count(), 1);

    // The guest boots but never answers the agent's handshake: the start fails in bounded time, clearly,
    // and no VMM is left running.
    let err = d.fails(&["start", "img1"]);
    assert!(err.contains("did not answer within 3 s"), "{err}");
    d.until(10, "img1 recorded as exited", || d.status("img1") == "exited");
    assert!(std::fs::read_to_string(dir.join("console.log"))
        .unwrap_or_default()
        .contains("up"));
    d.assert_clean_after_rm_all();
}
