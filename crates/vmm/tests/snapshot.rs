//! Snapshots as a user meets them: a VM saved by one process resumes in a new vessel-vmm
//! process (`--restore`) exactly where it stopped, and a file that is not a good snapshot gets
//! one clear line.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use vessel_vmm::exit::VmExit;

mod common;
use common::Scratch;

/// Runs the counter guest in this process until it printed, snapshots it to `path`, returns
/// the last byte it printed.
fn snapshot_counter(dir: &Path, path: &Path, cpus: u16) -> u8 {
    let kernel = dir.join("counter.elf");
    std::fs::write(
        &kernel,
        vessel_vmm::handmade::elf_kernel(&vessel_vmm::handmade::serial_counter()),
    )
    .unwrap();
    let log = dir.join("before.log");
    let _no_spawns = disk_or_spawn();
    // Every kind of virtio device: their (idle) state is saved and restored, and the restored
    // process listens on the same vsock socket once the first one is gone.
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let config: vessel_vmm::config::VmConfig = serde_json::from_value(serde_json::json!({
        "kernel": kernel, "memory_mib": 256, "cpus": cpus, "rng": true,
        "disks": [{"path": disk}],
        "vsock": {"guest_cid": 3, "uds_path": dir.join("v.sock")},
        "console": format!("file:{}", dir.join("hvc0.log").display()),
        "serial": format!("file:{}", log.display()), "pvm_guest_kernel": true,
    }))
    .unwrap();
    let kvm = vessel_vmm::launch::open_kvm(&config).unwrap();
    let running = vessel_vmm::launch::build(&kvm, &config).unwrap().start().unwrap();
    while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < 300 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Paused first, so the log's last byte is the last the saved guest printed (a snapshot of
    // a running VM resumes it afterwards).
    running.pause();
    vessel_vmm::snapshot::create(&running, path).unwrap();
    let last = *std::fs::read(&log).unwrap().last().unwrap();
    running.exit_sender().send(VmExit::PowerOff).unwrap();
    running.wait();
    last
}

/// Held while a test of this process has a VM with a disk open in-process, and while it starts a
/// child: a child started meanwhile would carry that disk's descriptor, and so its lock, until its
/// exec, and a restore of the disk in that window would find it in use.
static DISK_OR_SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn disk_or_spawn() -> std::sync::MutexGuard<'static, ()> {
    DISK_OR_SPAWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts `cmd` (spawn returns once the child has exec'd, its inherited descriptors closed).
fn spawn(cmd: &mut Command) -> std::process::Child {
    let _no_disk_opening = disk_or_spawn();
    cmd.spawn().unwrap()
}

fn restore_cmd(path: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"));
    cmd.arg("--restore")
        .arg(path)
        .args(["--serial", "stdio"])
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_new_process_resumes_the_guest_where_it_stopped() {
    let dir = Scratch::new("snapshot", "resume");
    let path = dir.0.join("vm.snap");
    let last = snapshot_counter(&dir.0, &path, 2);
    // 256 MiB of guest memory, barely touched: the file is sparse.
    let allocated = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap();
    assert!(
        allocated < 4 << 20,
        "{allocated} bytes allocated for a 256 MiB guest"
    );
    let mut child = spawn(restore_cmd(&path).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let mut resumed = [0u8; 600];
    child.stdout.as_mut().unwrap().read_exact(&mut resumed).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        resumed[0],
        last.wrapping_add(1),
        "the first byte continues the saved count"
    );
    assert!(resumed.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    // The snapshot file is mapped privately: the resumed guest's writes never reach it.
    let mut child = spawn(restore_cmd(&path).stdout(Stdio::piped()));
    let mut first = [0u8; 1];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        first[0],
        last.wrapping_add(1),
        "a second restore starts from the same point"
    );
}

/// A port whose read holds the vCPU inside the device until the test hands it the value.
struct HeldPort {
    entered: std::sync::mpsc::Sender<()>,
    value: std::sync::mpsc::Receiver<u8>,
}
impl vessel_vmm::devices::bus::BusDevice for HeldPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        self.entered.send(()).unwrap();
        data.fill(self.value.recv().unwrap());
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[test]
fn a_snapshot_taken_inside_a_port_read_saves_the_completed_read() {
    use std::sync::mpsc::channel;
    use std::time::Duration;
    use vessel_vmm::handmade::{elf_kernel, power_off, print_al, read_port};
    const HELD_PORT: u16 = 0x520;
    let dir = Scratch::new("snapshot", "held-read");
    let path = dir.0.join("vm.snap");
    // in al from HELD_PORT, then AL to COM1 and power off.
    let code = [read_port(HELD_PORT), print_al(), power_off()].concat();
    let kernel = dir.0.join("in.elf");
    std::fs::write(&kernel, elf_kernel(&code)).unwrap();
    let config: vessel_vmm::config::VmConfig = serde_json::from_value(serde_json::json!({
        "kernel": kernel, "memory_mib": 64, "cpus": 1, "pvm_guest_kernel": true,
    }))
    .unwrap();
    let kvm = vessel_vmm::launch::open_kvm(&config).unwrap();
    let mut vm = vessel_vmm::launch::build(&kvm, &config).unwrap();
    let (entered, entered_rx) = channel();
    let (value, value_rx) = channel();
    let port = HeldPort {
        entered,
        value: value_rx,
    };
    vm.add_port_device(HELD_PORT, 1, std::sync::Arc::new(std::sync::Mutex::new(port)))
        .unwrap();
    let running = vm.start().unwrap();
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the guest reached its IN");
    std::thread::scope(|scope| {
        // The pause is asked for while the vCPU is in the device: it parks on its way back,
        // with the IN handed to KVM but not yet put into AL.
        let pauser = scope.spawn(|| running.pause());
        while !running.is_paused() {
            std::thread::sleep(Duration::from_millis(1));
        }
        value.send(b'Q').unwrap();
        pauser.join().unwrap();
    });
    vessel_vmm::snapshot::create(&running, &path).unwrap();
    running.exit_sender().send(VmExit::PowerOff).unwrap();
    running.wait();
    // The new process has nothing at HELD_PORT: an IN replayed there would read 0xff.
    let out = spawn(restore_cmd(&path).stdout(Stdio::piped()).stderr(Stdio::piped()))
        .wait_with_output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout, b"Q",
        "the restored guest printed the value its IN read"
    );
}

#[test]
fn a_restore_rebuilds_the_virtio_devices_on_the_same_disk() {
    use vessel_vmm::config::SerialConfig;
    let dir = Scratch::new("snapshot", "devices");
    let path = dir.0.join("vm.snap");
    snapshot_counter(&dir.0, &path, 1);
    let no_spawns = disk_or_spawn();
    let vm = vessel_vmm::snapshot::restore(&path, SerialConfig::None).unwrap();
    let types: Vec<u32> = vm
        .virtio_transports()
        .iter()
        .map(|t| t.lock().unwrap().device_type())
        .collect();
    assert_eq!(
        types,
        [2, 19, 4, 3],
        "the disk, vsock, the entropy device and the console, in their boot order"
    );
    // The restored VM reopened the disk and holds its lock, as a booted VM does.
    let err = vessel_vmm::snapshot::restore(&path, SerialConfig::None)
        .err()
        .expect("a second restore while the first VM holds the disk");
    assert!(err.to_string().contains("in use by another VM"), "{err}");
    drop(vm);
    drop(no_spawns);
    std::fs::remove_file(dir.0.join("disk.img")).unwrap();
    assert_refused(&path, "disk.img does not exist");
}

fn assert_refused(path: &Path, needle: &str) {
    let mut child = spawn(restore_cmd(path).stdout(Stdio::null()).stderr(Stdio::piped()));
    // A snapshot that should be refused but is not would run forever: bound the wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{} was restored instead of refused ({needle})", path.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{needle:?} in {err:?}");
}

#[test]
fn bad_snapshot_files_get_one_clear_line() {
    let dir = Scratch::new("snapshot", "bad");
    let path = dir.0.join("vm.snap");
    snapshot_counter(&dir.0, &path, 1);
    let good = std::fs::read(&path).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    assert_refused(&dir.0.join("missing.snap"), "Cannot read snapshot");
    assert_refused(&write("text", b"hello"), "is not a vessel-vmm snapshot");
    let mut version = good.clone();
    version[16] = 9;
    assert_refused(&write("version", &version), "format version 9");
    let mut header = good.clone();
    header[30] ^= 1;
    assert_refused(&write("header", &header), "header checksum");
    let mut state = good.clone();
    let last = state.len() - 10;
    state[last] ^= 0x20;
    assert_refused(&write("state", &state), "state checksum");
    assert_refused(&write("truncated", &good[..good.len() - 100]), "truncated");
}

#[test]
fn a_host_cpu_without_the_guests_features_is_refused() {
    use sha2::{Digest, Sha256};
    let dir = Scratch::new("snapshot", "cpu");
    let path = dir.0.join("vm.snap");
    snapshot_counter(&dir.0, &path, 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let state_offset = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let mut state: serde_json::Value = serde_json::from_slice(&bytes[state_offset..]).unwrap();
    // Claim the guest saw every leaf-7 EBX feature; no host has them all. Each entry is the
    // raw kvm_cpuid_entry2: function, index, flags, eax, ebx, ... as little-endian u32s.
    let mut edited = false;
    for entry in state["vcpus"][0]["cpuid"].as_array_mut().unwrap() {
        let bytes = entry.as_array_mut().unwrap();
        let word = |i: usize| bytes[i * 4].as_u64().unwrap();
        if word(0) == 7 && word(1) == 0 {
            for byte in &mut bytes[16..20] {
                *byte = serde_json::json!(255);
            }
            edited = true;
        }
    }
    assert!(edited, "the snapshot has CPUID leaf 7");
    let state = serde_json::to_vec(&state).unwrap();
    bytes.truncate(state_offset);
    bytes.extend(&state);
    bytes[32..40].copy_from_slice(&(state.len() as u64).to_le_bytes());
    bytes[40..72].copy_from_slice(&Sha256::digest(&state));
    let header_sum = Sha256::digest(&bytes[..88]);
    bytes[88..120].copy_from_slice(&header_sum);
    let edited = dir.0.join("edited.snap");
    std::fs::write(&edited, &bytes).unwrap();
    assert_refused(
        &edited,
        "lacks features the snapshot's guest uses (CPUID leaf 0x7 ebx",
    );
}
