//! Native benchmark of vessel-vmm as a process (run by scripts/bench-vmm):
//! - spawn → ready: exec until `--ready-fd` says KVM is open;
//! - ready → first guest instruction: until the hand-made guest's first serial byte arrives;
//! - CPU time of a whole boot-to-power-off of that guest (user + system of the VMM process);
//! - RSS outside guest memory, read from /proc/PID/smaps while the guest spins;
//! - snapshot of a 256 MiB guest (sparse write speed) and restore to running, in process and
//!   as a new `vessel-vmm --restore` process up to the guest's first byte.
//!
//! Firecracker is not packaged for Debian, so its figures are the ones its spec publishes and
//! that were measured on this machine, printed beside ours with the ratio.
//!
//! Usage: bench_native VESSEL_VMM [ROUNDS]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vessel_vmm::handmade::{elf_kernel, power_off, print, spin};
use vessel_vmm::kvm::Flavour;

const GUEST_MIB: u64 = 128;
const FIRECRACKER_READY_MS: f64 = 2.2;
const FIRECRACKER_RSS_MIB: f64 = 3.9;

struct Round {
    ready: Duration,
    first_instruction: Duration,
    cpu: Duration,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array with new descriptors, owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0, "pipe2");
    // SAFETY: both descriptors were just created and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn command(vmm: &str, kernel: &std::path::Path) -> Command {
    let mut cmd = Command::new(vmm);
    cmd.arg("--kernel")
        .arg(kernel)
        .args(["--memory", &GUEST_MIB.to_string(), "--no-rng"]);
    if Flavour::detect() == Flavour::Pvm {
        cmd.arg("--pvm-guest-kernel");
    }
    // BENCH_VMM_ARGS: more flags for every VMM this run starts (e.g. "--seccomp off", to see the
    // filters' share of the start-up).
    if let Ok(extra) = std::env::var("BENCH_VMM_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

fn child_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn one_boot(vmm: &str, kernel: &std::path::Path) -> Round {
    let (ready_read, ready_write) = pipe();
    let mut cmd = command(vmm, kernel);
    cmd.arg("--ready-fd").arg(ready_write.as_raw_fd().to_string());
    let cpu_before = child_cpu();
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn vessel-vmm");
    drop(ready_write);
    let mut ready_pipe = std::fs::File::from(ready_read);
    let mut buf = [0u8; 6];
    ready_pipe.read_exact(&mut buf).expect("ready line");
    let ready = start.elapsed();
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .expect("first serial byte");
    let first_instruction = start.elapsed() - ready;
    assert!(child.wait().unwrap().success(), "guest should power off");
    Round {
        ready,
        first_instruction,
        cpu: child_cpu() - cpu_before,
    }
}

/// Resident memory of `pid` outside its guest RAM mapping (the one anonymous mapping of exactly
/// the guest's size).
fn rss_outside_guest_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut total, mut size_kib, mut is_anon) = (0, 0, false);
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if line.contains('-') && fields.len() >= 5 && !line.ends_with(" kB") {
            is_anon = fields.len() == 5;
        } else if fields.first() == Some(&"Size:") {
            size_kib = fields[1].parse().unwrap();
        } else if fields.first() == Some(&"Rss:") {
            let rss: u64 = fields[1].parse().unwrap();
            if !(is_anon && size_kib == GUEST_MIB * 1024) {
                total += rss;
            }
        }
    }
    total
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let vmm = args
        .get(1)
        .expect("usage: bench_native VESSEL_VMM [ROUNDS]")
        .clone();
    let rounds: usize = args.get(2).map_or(30, |r| r.parse().expect("ROUNDS"));
    let dir = std::env::temp_dir().join(format!("vessel-bench-vmm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let boot_kernel = dir.join("poweroff.elf");
    std::fs::write(&boot_kernel, elf_kernel(&[print(b"!"), power_off()].concat())).unwrap();
    let spin_kernel = dir.join("spin.elf");
    std::fs::write(&spin_kernel, elf_kernel(&[print(b"!"), spin()].concat())).unwrap();

    one_boot(&vmm, &boot_kernel); // warm the page cache
    let results: Vec<Round> = (0..rounds).map(|_| one_boot(&vmm, &boot_kernel)).collect();
    let ms = |f: fn(&Round) -> Duration| median(results.iter().map(|r| f(r).as_secs_f64() * 1e3).collect());
    let (ready, first, cpu) = (ms(|r| r.ready), ms(|r| r.first_instruction), ms(|r| r.cpu));

    let mut spinner = command(&vmm, &spin_kernel).spawn().unwrap();
    let mut first_byte = [0u8; 1];
    spinner
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first_byte)
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let rss_mib = rss_outside_guest_kib(spinner.id()) as f64 / 1024.0;
    spinner.kill().unwrap();
    spinner.wait().unwrap();

    let (snap_ms, snap_gbps, restore_ms, restore_proc_ms) = snapshot_restore(&vmm, &dir, rounds.min(10));
    std::fs::remove_dir_all(&dir).unwrap();

    println!("vessel-vmm native benchmark, {rounds} rounds, 1 vCPU / {GUEST_MIB} MiB, medians");
    println!(
        "{:<44} {:>10} {:>12} {:>8}",
        "metric", "vessel", "firecracker", "ratio"
    );
    println!(
        "{:<44} {:>8.2}ms {:>10.2}ms {:>8.2}",
        "spawn -> ready",
        ready,
        FIRECRACKER_READY_MS,
        ready / FIRECRACKER_READY_MS
    );
    println!(
        "{:<44} {:>8.2}ms {:>12}",
        "ready -> first guest instruction", first, "-"
    );
    println!(
        "{:<44} {:>8.2}ms {:>10}ms",
        "CPU time, spawn to guest power-off", cpu, "<= 8"
    );
    println!(
        "{:<44} {:>7.2}MiB {:>9.1}MiB {:>8.2}",
        "RSS outside guest memory",
        rss_mib,
        FIRECRACKER_RSS_MIB,
        rss_mib / FIRECRACKER_RSS_MIB
    );
    println!(
        "{:<44} {:>8.2}ms {:>12}",
        "snapshot of a 256 MiB guest", snap_ms, "-"
    );
    println!(
        "{:<44} {:>6.1}GB/s {:>12}",
        "  guest memory per second (sparse)", snap_gbps, ">= 1 GB/s"
    );
    println!(
        "{:<44} {:>8.2}ms {:>10}ms",
        "restore to running (in process)", restore_ms, "4-10"
    );
    println!(
        "{:<44} {:>8.2}ms {:>12}",
        "restore, new process to first guest byte", restore_proc_ms, "-"
    );
}

/// Snapshots a running 256 MiB counter guest `rounds` times, restores it as many times.
fn snapshot_restore(vmm: &str, dir: &std::path::Path, rounds: usize) -> (f64, f64, f64, f64) {
    use vessel_vmm::config::{SerialConfig, VmConfig};
    // mov edx, 0x3f8; loop: inc ebx; mov al, bl; out dx, al; jmp loop
    let counter = [
        0xba, 0xf8, 0x03, 0x00, 0x00, 0xff, 0xc3, 0x88, 0xd8, 0xee, 0xeb, 0xf9,
    ];
    let kernel = dir.join("counter.elf");
    std::fs::write(&kernel, elf_kernel(&counter)).unwrap();
    let config: VmConfig = serde_json::from_value(serde_json::json!({
        "kernel": kernel, "memory_mib": 256, "rng": false, "serial": "none",
        "pvm_guest_kernel": Flavour::detect() == Flavour::Pvm,
    }))
    .unwrap();
    let kvm = vessel_vmm::launch::open_kvm(&config).unwrap();
    let running = vessel_vmm::launch::build(&kvm, &config).unwrap().start().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    running.pause();
    let path = dir.join("vm.snap");
    let (mut snaps, mut gbps) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        let info = vessel_vmm::snapshot::create(&running, &path).unwrap();
        let took = start.elapsed().as_secs_f64();
        snaps.push(took * 1e3);
        gbps.push(info.guest_bytes as f64 / took / 1e9);
    }
    running
        .exit_sender()
        .send(vessel_vmm::exit::VmExit::PowerOff)
        .unwrap();
    running.wait();
    let mut restores = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let vm = vessel_vmm::snapshot::restore(&path, SerialConfig::None)
            .unwrap()
            .start()
            .unwrap();
        restores.push(start.elapsed().as_secs_f64() * 1e3);
        vm.exit_sender().send(vessel_vmm::exit::VmExit::PowerOff).unwrap();
        vm.wait();
    }
    let mut processes = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let mut child = Command::new(vmm)
            .arg("--restore")
            .arg(&path)
            .args(["--serial", "stdio"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut byte = [0u8; 1];
        child.stdout.as_mut().unwrap().read_exact(&mut byte).unwrap();
        processes.push(start.elapsed().as_secs_f64() * 1e3);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    (median(snaps), median(gbps), median(restores), median(processes))
}
