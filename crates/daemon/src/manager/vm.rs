//! VM instances (kind vm): what a create request for one may hold, the VMM command line its supervisor
//! runs, its taps on bridge networks, and the VMM's API for the verbs a VM answers in its own way (pause
//! and resume, the power button for stop). A raw VM (its own kernel, no image) has no guest agent: exec,
//! processes inside and files need one, and say so.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use vessel_api::{Instance, InstanceConfig, Kind};
use vessel_net::tap::{self, TapPort};

use super::networks::is_bridge;
use super::{Manager, ManagerError};

/// Guest memory when `--memory` is not given, and the least a VM may have.
const DEFAULT_MEMORY_MIB: u64 = 256;
const MIN_MEMORY_MIB: u64 = 16;
const MAX_VCPUS: u64 = 32;
/// A VM made from an image: its writable disk by default, and the least it may have.
pub(super) const DEFAULT_DISK: u64 = 1 << 30;
const MIN_DISK: u64 = 16 << 20;
/// The guest CID of every VM (each has its own vsock device and host socket).
pub(super) const GUEST_CID: u32 = 3;
const PVM_EXPLANATION: &str =
    "/dev/kvm on this host is kvm-pvm (paravirtual KVM, no VT-x/SVM), which cannot boot \
     Debian's kernel; run VMs made from images on a host with hardware KVM (or give a PVM guest --kernel)";
/// The VMM's API answers at once; one that does not is stuck.
const VMM_API_TIMEOUT: Duration = Duration::from_secs(5);
/// The kernel command line of a raw VM that names none: its console on the serial port the log reads.
const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

fn invalid(m: String) -> ManagerError {
    ManagerError::Invalid(m)
}

pub fn is_vm(inst: &Instance) -> bool {
    inst.kind == Kind::Vm
}

/// A VM made from an image (with vessel's guest agent), not a raw one.
pub fn has_agent(inst: &Instance) -> bool {
    is_vm(inst) && !inst.image.is_empty()
}

/// kvm-pvm boots only kernels built as PVM guests.
fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// A create request for kind vm: from an image (with the guest agent) or raw (its own kernel), with only the
/// settings a VM has.
pub fn validate(config: &InstanceConfig) -> Result<(), ManagerError> {
    let spec = config.vm.clone().unwrap_or_default();
    let raw = config.image.is_empty();
    if raw && spec.kernel.is_none() {
        return Err(invalid(
            "A VM boots an image (vessel run --vm IMAGE) or its own --kernel".into(),
        ));
    }
    if !raw && spec.kernel.is_none() && kvm_is_pvm() {
        return Err(invalid(format!(
            "Cannot run a VM from an image here: {}",
            PVM_EXPLANATION
        )));
    }
    if raw && spec.disk_size.is_some() {
        return Err(invalid(
            "--disk-size sizes the writable disk of a VM made from an image; a raw VM takes --disk".into(),
        ));
    }
    if !raw && !spec.disks.is_empty() {
        return Err(invalid(
            "--disk is for raw VMs; a VM made from an image gets its own writable disk (--disk-size)".into(),
        ));
    }
    if spec.disk_size.is_some_and(|s| s < MIN_DISK) {
        return Err(invalid(format!(
            "--disk-size must be at least {} MiB",
            MIN_DISK >> 20
        )));
    }
    for p in boot_files(&spec) {
        if !p.starts_with('/') {
            return Err(invalid(format!("{p:?} is not an absolute path")));
        }
    }
    for d in &spec.disks {
        if d.split(',').skip(1).any(|o| o != "ro") {
            return Err(invalid(format!("Disk {d:?}: the only option is ro (PATH[,ro])")));
        }
    }
    // What only a container has (a VM's guest has its own root, capabilities and ids).
    let container_only = [
        (!config.volumes.is_empty(), "--volume"),
        (!config.tmpfs.is_empty(), "--tmpfs"),
        (
            !config.cap_add.is_empty() || !config.cap_drop.is_empty(),
            "--cap-add/--cap-drop",
        ),
        (config.read_only, "--read-only"),
        (config.init, "--init (the guest agent is the VM's init)"),
        (config.userns.is_some(), "--userns"),
    ];
    if let Some((_, what)) = container_only.iter().find(|(set, _)| *set) {
        return Err(invalid(format!("A VM cannot take {what}")));
    }
    // What needs a guest agent, which a raw VM has not.
    let agent_only = [
        (!config.command.is_empty(), "a command"),
        (config.entrypoint.is_some(), "--entrypoint"),
        (!config.env.is_empty(), "--env"),
        (config.user.is_some(), "--user"),
        (config.workdir.is_some(), "--workdir"),
        (!config.ulimits.is_empty(), "--ulimit"),
        (
            config.stop_signal.is_some(),
            "--stop-signal (a raw VM is stopped by its power button)",
        ),
        (
            !config.dns.is_empty(),
            "--dns (the guest's OS sets its resolvers)",
        ),
    ];
    if let Some((_, what)) = agent_only.iter().find(|(set, _)| raw && *set) {
        return Err(invalid(format!(
            "A raw VM (--kernel, no image) cannot take {what}"
        )));
    }
    if config.network_mode.as_deref() == Some("host") {
        return Err(invalid(
            "A VM has its own network stack: network mode host is for containers".into(),
        ));
    }
    let l = &config.limits;
    let container_limits = [
        l.memory_swap.is_some(),
        l.cpu_shares.is_some(),
        l.cpuset_cpus.is_some(),
        l.pids.is_some(),
        l.blkio_weight.is_some(),
        l.device_read_bps.as_ref().is_some_and(|v| !v.is_empty()),
        l.device_write_bps.as_ref().is_some_and(|v| !v.is_empty()),
        l.device_read_iops.as_ref().is_some_and(|v| !v.is_empty()),
        l.device_write_iops.as_ref().is_some_and(|v| !v.is_empty()),
    ];
    if container_limits.iter().any(|set| *set) {
        return Err(invalid(
            "A VM takes --memory (its RAM) and --cpus (its vCPUs); the other limits are for containers"
                .into(),
        ));
    }
    memory_mib(config)?;
    vcpus(config)?;
    Ok(())
}

/// The host files a VM's spec names: kernel, initrd, disks (without their options).
fn boot_files(spec: &vessel_api::VmSpec) -> impl Iterator<Item = &str> {
    spec.kernel
        .iter()
        .map(String::as_str)
        .chain(spec.initrd.as_deref())
        .chain(spec.disks.iter().map(|d| d.split(',').next().unwrap_or("")))
}

fn memory_mib(config: &InstanceConfig) -> Result<u64, ManagerError> {
    match config.limits.memory {
        None => Ok(DEFAULT_MEMORY_MIB),
        Some(bytes) if bytes >= (MIN_MEMORY_MIB << 20) as i64 => Ok(bytes as u64 >> 20),
        Some(_) => Err(invalid(format!(
            "A VM needs --memory of at least {MIN_MEMORY_MIB} MiB"
        ))),
    }
}

fn vcpus(config: &InstanceConfig) -> Result<u64, ManagerError> {
    match config.limits.cpus {
        None => Ok(1),
        Some(c) if c > 0.0 && c.ceil() as u64 <= MAX_VCPUS => Ok(c.ceil() as u64),
        Some(c) => Err(invalid(format!(
            "A VM has 1 to {MAX_VCPUS} vCPUs (got --cpus {c})"
        ))),
    }
}

/// The Linux `ip=` argument that configures the guest's first interface from its first IPv4 address
/// (client::gateway:netmask:hostname:eth0:off:dns).
fn ip_argument(ip: std::net::Ipv4Addr, prefix: u8, gateway: Option<&str>, hostname: &str) -> String {
    let mask = std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
    let gw = gateway.unwrap_or("");
    format!("ip={ip}::{gw}:{mask}:{hostname}:eth0:off:{gw}")
}

/// What a VM boots, on the VMM's command line.
pub(super) struct BootParts {
    pub kernel: String,
    pub initrd: Option<String>,
    pub disks: Vec<String>,
    pub cmdline: String,
    /// The serial console: stdio (a raw VM's console is its output) or file:PATH.
    pub serial: String,
    /// cid=N,path=PATH for a VM with an agent.
    pub vsock: Option<String>,
}

type OnNetwork<'a> = (&'a crate::store::AttachmentRecord, &'a vessel_api::Network);

/// A raw VM boots what it was given; its kernel configures its first interface (`ip=`) unless its command
/// line says otherwise.
fn raw_boot(inst: &Instance, spec: &vessel_api::VmSpec, on_networks: &[OnNetwork<'_>]) -> BootParts {
    let mut cmdline = spec.cmdline.clone().unwrap_or_else(|| DEFAULT_CMDLINE.into());
    if !cmdline.split_whitespace().any(|w| w.starts_with("ip=")) {
        if let Some((a, n)) = on_networks.iter().find(|(a, _)| a.ip4.is_some()) {
            let prefix = n
                .subnet
                .as_deref()
                .and_then(|s| s.parse::<vessel_net::ipnet::IpNet>().ok())
                .map_or(24, |s| s.prefix_len());
            let gateway = (!n.internal).then_some(n.gateway.as_deref()).flatten();
            let hostname = super::bundle::hostname(&inst.config, &inst.id);
            if let Some(ip) = a.ip4 {
                cmdline.push(' ');
                cmdline.push_str(&ip_argument(ip, prefix, gateway, &hostname));
            }
        }
    }
    BootParts {
        kernel: spec.kernel.clone().unwrap_or_default(),
        initrd: spec.initrd.clone(),
        disks: spec.disks.clone(),
        cmdline,
        serial: "stdio".into(),
        vsock: None,
    }
}

impl Manager {
    fn vmm_command_file(&self, id: &str) -> PathBuf {
        self.cfg.instance_dir(id).join("vmm.json")
    }

    /// The VM's boot source, as `PUT /boot-source` takes it.
    fn boot_source_file(&self, id: &str) -> PathBuf {
        self.cfg.instance_dir(id).join("boot.json")
    }

    /// The start of a VM: its VMM (waiting on its API since its supervisor ran it) gets its boot source and
    /// starts; a VM made from an image then has its supervisor start the main process through the agent.
    pub(super) fn boot_vm(&self, inst: &Instance) -> Result<(), ManagerError> {
        let socket = self.cfg.vmm_socket(&inst.id);
        let source = std::fs::read_to_string(self.boot_source_file(&inst.id))
            .map_err(|e| ManagerError::Internal(format!("{}: its boot source: {e}", inst.name)))?;
        let failed = |e: VmmCallError| ManagerError::Invalid(format!("Cannot boot {}: {e}", inst.name));
        // The VMM's socket appears a moment after it runs.
        let deadline = std::time::Instant::now() + VMM_API_TIMEOUT;
        loop {
            match vmm_call(&socket, "PUT", "/boot-source", &source) {
                Err(VmmCallError::Unreachable(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                r => break r.map_err(failed)?,
            }
        }
        vmm_call(&socket, "PUT", "/actions", r#"{"action_type":"InstanceStart"}"#).map_err(failed)?;
        if has_agent(inst) {
            self.start_main_process(inst)?;
        }
        Ok(())
    }

    /// Asks the supervisor of a booting VM to start its main process through the agent; waits for it.
    fn start_main_process(&self, inst: &Instance) -> Result<(), ManagerError> {
        use crate::supervisor::vm::{SupervisorReply, SupervisorRequest};
        use vessel_api::frames::{self, Decoder, FrameKind};
        let failed = |m: String| ManagerError::Invalid(format!("Cannot start {}: {m}", inst.name));
        let mut s = UnixStream::connect(self.cfg.attach_socket(&inst.id))
            .map_err(|e| failed(format!("its supervisor: {e}")))?;
        // The supervisor waits up to the boot timeout for the agent, then answers.
        let _ = s.set_read_timeout(Some(
            Duration::from_secs(self.cfg.vm_boot_timeout) + VMM_API_TIMEOUT,
        ));
        let request = serde_json::to_vec(&SupervisorRequest::StartMain).unwrap_or_default();
        s.write_all(&frames::encode(FrameKind::Control, &request))
            .map_err(|e| failed(format!("its supervisor: {e}")))?;
        let mut decoder = Decoder::default();
        let mut buf = [0u8; 4096];
        loop {
            match decoder.next_frame() {
                Ok(Some((FrameKind::Control, payload))) => {
                    return match serde_json::from_slice::<SupervisorReply>(&payload) {
                        Ok(SupervisorReply::Started { .. }) => Ok(()),
                        Ok(SupervisorReply::Failed { message }) => Err(failed(message)),
                        Err(e) => Err(failed(format!("its supervisor's answer: {e}"))),
                    };
                }
                // Output the main process made at once: for the log and attached clients, not for us.
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Err(failed(e.to_string())),
            }
            match s.read(&mut buf) {
                Ok(0) => return Err(failed("its supervisor hung up".into())),
                Ok(n) => decoder.push(&buf[..n]),
                Err(e) => return Err(failed(format!("no answer from its supervisor: {e}"))),
            }
        }
    }

    /// Before each start: the boot files are checked and the VMM's command line written for the
    /// supervisor; returns the file's path.
    pub(super) fn prepare_vm(&self, inst: &Instance) -> Result<PathBuf, ManagerError> {
        let spec = inst.config.vm.clone().unwrap_or_default();
        for p in boot_files(&spec) {
            std::fs::File::open(p).map_err(|e| invalid(format!("Cannot read {p}: {e}")))?;
        }
        let atts = self.attachments_of(&inst.id)?;
        let nets = self.store.networks()?;
        let mut on_networks = Vec::new();
        for a in &atts {
            let n = nets
                .iter()
                .find(|n| n.id == a.network_id)
                .ok_or_else(|| ManagerError::Internal(format!("network {} vanished", a.network_id)))?;
            if !is_bridge(n) {
                return Err(invalid(format!(
                    "Network {} is a macvlan network: a VM joins bridge networks",
                    n.name
                )));
            }
            on_networks.push((a, n));
        }
        let boot = if has_agent(inst) {
            self.image_boot(inst, &on_networks)?
        } else {
            raw_boot(inst, &spec, &on_networks)
        };
        // The VMM waits on its API for its boot source: vesseld boots it at start, once clients that
        // attached before have their connection (so they see the console from the first byte).
        let mut argv: Vec<String> = vec![self.cfg.vmm.display().to_string()];
        let mut arg = |k: &str, v: String| {
            argv.push(k.into());
            argv.push(v);
        };
        for d in boot.disks {
            arg("--disk", d);
        }
        arg("--memory", memory_mib(&inst.config)?.to_string());
        arg("--cpus", vcpus(&inst.config)?.to_string());
        arg("--serial", boot.serial);
        if let Some(v) = boot.vsock {
            arg("--vsock", v);
        }
        arg("--api-sock", self.cfg.vmm_socket(&inst.id).display().to_string());
        for (a, _) in &on_networks {
            arg("--net", format!("tap={},mac={}", a.host_ifname, a.mac));
        }
        if spec.pvm_guest_kernel {
            argv.push("--pvm-guest-kernel".into());
        }
        let source = serde_json::json!({
            "kernel_image_path": boot.kernel,
            "initrd_path": boot.initrd,
            "boot_args": boot.cmdline,
        });
        let path = self.vmm_command_file(&inst.id);
        std::fs::create_dir_all(self.cfg.instance_dir(&inst.id))
            .and_then(|()| {
                crate::supervisor::write_atomic(&path, &serde_json::to_vec(&argv).unwrap_or_default())
            })
            .and_then(|()| {
                crate::supervisor::write_atomic(
                    &self.boot_source_file(&inst.id),
                    &serde_json::to_vec(&source).unwrap_or_default(),
                )
            })
            .map_err(|e| ManagerError::Internal(format!("Cannot write {}: {e}", path.display())))?;
        self.remove_vm_sockets(&inst.id);
        Ok(path)
    }

    /// A VM's VMM sockets (its API and vsock), which a VMM that was killed leaves behind.
    pub(super) fn remove_vm_sockets(&self, id: &str) {
        for s in [self.cfg.vmm_socket(id), self.cfg.vsock_socket(id)] {
            let _ = std::fs::remove_file(s);
        }
    }

    /// Before a start: a tap on its bridge for each recorded attachment (those there already stay, as a
    /// container's veths do; they go with the instance).
    pub(super) fn plumb_taps(&self, inst: &Instance) -> Result<(), ManagerError> {
        for a in self.attachments_of(&inst.id)? {
            if vessel_net::link::index(&a.host_ifname).is_some() {
                continue;
            }
            let n = self.store.network(&a.network_id)?;
            tap::attach(
                &n.link,
                &TapPort {
                    name: a.host_ifname.clone(),
                    mtu: n.mtu,
                    rate: inst.config.net_rate,
                },
            )
            .map_err(|e| ManagerError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// A signal for a VM: SIGKILL ends its VMM. A VM made from an image passes any other to its main
    /// process; a raw VM takes SIGTERM, SIGINT and SIGPWR as its power button (the guest decides).
    pub(super) fn signal_vm(&self, inst: &Instance, sig: Signal) -> Result<(), ManagerError> {
        if has_agent(inst) && sig != Signal::SIGKILL {
            return self.signal_main_process(inst, sig);
        }
        match sig {
            Signal::SIGKILL => {
                if let Some(pid) = inst.state.pid {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                }
                Ok(())
            }
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR => {
                match vmm_call(
                    &self.cfg.vmm_socket(&inst.id),
                    "PUT",
                    "/actions",
                    r#"{"action_type":"PressPowerButton"}"#,
                ) {
                    Ok(()) => Ok(()),
                    // Its VMM is gone or going: its supervisor records the exit.
                    Err(VmmCallError::Unreachable(_)) => Ok(()),
                    Err(e) => Err(ManagerError::Conflict(format!("{}: {e}", inst.name))),
                }
            }
            other => Err(invalid(format!(
                "A VM takes SIGKILL, or SIGTERM, SIGINT or SIGPWR (its power button); {other} needs the guest agent"
            ))),
        }
    }

    /// A signal for the main process of a VM made from an image: through its supervisor, which holds the
    /// agent's session of that process.
    fn signal_main_process(&self, inst: &Instance, sig: Signal) -> Result<(), ManagerError> {
        let frame =
            vessel_agent::proto::control(&vessel_agent::proto::Request::Signal { signal: sig as i32 });
        match UnixStream::connect(self.cfg.attach_socket(&inst.id)) {
            Ok(mut s) => {
                let _ = s.set_write_timeout(Some(VMM_API_TIMEOUT));
                s.write_all(&frame)
                    .map_err(|e| ManagerError::Internal(format!("{}: cannot signal: {e}", inst.name)))
            }
            // Its supervisor is gone: the exit is being recorded.
            Err(_) => Ok(()),
        }
    }

    /// Pause (freeze its vCPUs) or resume a running VM through its VMM.
    pub(super) fn pause_vm(&self, inst: &Instance, freeze: bool) -> Result<(), ManagerError> {
        let body = if freeze {
            r#"{"state":"Paused"}"#
        } else {
            r#"{"state":"Resumed"}"#
        };
        vmm_call(&self.cfg.vmm_socket(&inst.id), "PATCH", "/vm", body)
            .map_err(|e| ManagerError::Conflict(format!("{}: {e}", inst.name)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmmCallError {
    #[error("its VMM's API cannot be reached: {0}")]
    Unreachable(std::io::Error),
    #[error("its VMM's API failed: {0}")]
    Io(std::io::Error),
    #[error("its VMM refused: {0}")]
    Refused(String),
}

/// One request to a VMM's API (HTTP/1.1 on its unix socket); Ok on a 2xx answer.
pub fn vmm_call(socket: &Path, method: &str, path: &str, body: &str) -> Result<(), VmmCallError> {
    let mut s = UnixStream::connect(socket).map_err(VmmCallError::Unreachable)?;
    let _ = s.set_read_timeout(Some(VMM_API_TIMEOUT));
    let _ = s.set_write_timeout(Some(VMM_API_TIMEOUT));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(VmmCallError::Io)?;
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(VmmCallError::Io)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| VmmCallError::Refused(format!("not an HTTP answer: {:?}", status.trim())))?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(VmmCallError::Io)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    if (200..300).contains(&code) {
        return Ok(());
    }
    let mut text = vec![0u8; length.min(4096)];
    let _ = reader.read_exact(&mut text);
    let fault = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["fault_message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&text).into_owned());
    Err(VmmCallError::Refused(format!("{code}: {fault}")))
}

/// What a VM uses on the host, as `stats` shows it.
pub(super) struct VmUsage {
    pub cpu_ns: u64,
    pub memory: u64,
    pub block_read: u64,
    pub block_write: u64,
    pub net_rx: u64,
    pub net_tx: u64,
}

/// Resource use of a VM: its VMM process (vCPU threads included) and its taps.
pub(super) fn vm_usage(pid: i32, taps: &[String]) -> VmUsage {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<u64> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r.split(' ').map(|x| x.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the command.
    let cpu_ns = (f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0)) * (1_000_000_000 / ticks.max(1));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let io_field = |k: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The tap's transmit is the guest's receive.
    let (tx, rx) = super::stats::net_dev(pid, |name| taps.iter().any(|t| t == name));
    VmUsage {
        cpu_ns,
        memory: rss,
        block_read: io_field("read_bytes:"),
        block_write: io_field("write_bytes:"),
        net_rx: rx,
        net_tx: tx,
    }
}
