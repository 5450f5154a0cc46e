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

/// A create request for kind vm: a raw VM (kernel, optional initrd and disks) with the settings a VM has.
pub fn validate(config: &InstanceConfig) -> Result<(), ManagerError> {
    let spec = config.vm.clone().unwrap_or_default();
    let Some(kernel) = &spec.kernel else {
        return Err(invalid(
            "A VM from an image needs vessel's guest agent, which this vesseld does not have yet: \
             give --kernel (with --initrd or --disk) for a VM that boots its own OS"
                .into(),
        ));
    };
    if !config.image.is_empty() {
        return Err(invalid(format!(
            "A VM with --kernel boots its own OS and takes no image (got {:?})",
            config.image
        )));
    }
    let paths = std::iter::once(kernel.as_str())
        .chain(spec.initrd.as_deref())
        .chain(spec.disks.iter().map(|d| d.split(',').next().unwrap_or("")));
    for p in paths {
        if !p.starts_with('/') {
            return Err(invalid(format!("{p:?} is not an absolute path")));
        }
    }
    for d in &spec.disks {
        if d.split(',').skip(1).any(|o| o != "ro") {
            return Err(invalid(format!("Disk {d:?}: the only option is ro (PATH[,ro])")));
        }
    }
    // What only a process in a container (or a guest agent) can have.
    let agent_only = [
        (!config.command.is_empty(), "a command"),
        (config.entrypoint.is_some(), "--entrypoint"),
        (!config.env.is_empty(), "--env"),
        (config.user.is_some(), "--user"),
        (config.workdir.is_some(), "--workdir"),
        (!config.volumes.is_empty(), "--volume"),
        (!config.tmpfs.is_empty(), "--tmpfs"),
        (
            !config.cap_add.is_empty() || !config.cap_drop.is_empty(),
            "--cap-add/--cap-drop",
        ),
        (!config.ulimits.is_empty(), "--ulimit"),
        (config.read_only, "--read-only"),
        (config.init, "--init"),
        (config.userns.is_some(), "--userns"),
        (
            config.stop_signal.is_some(),
            "--stop-signal (a VM is stopped by its power button)",
        ),
        (
            !config.dns.is_empty(),
            "--dns (the guest's OS sets its resolvers)",
        ),
    ];
    if let Some((_, what)) = agent_only.iter().find(|(set, _)| *set) {
        return Err(invalid(format!("A raw VM (--kernel) cannot take {what}")));
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

impl Manager {
    fn vmm_command_file(&self, id: &str) -> PathBuf {
        self.cfg.instance_dir(id).join("vmm.json")
    }

    /// Before each start: the boot files are checked and the VMM's command line written for the
    /// supervisor; returns the file's path.
    pub(super) fn prepare_vm(&self, inst: &Instance) -> Result<PathBuf, ManagerError> {
        let spec = inst.config.vm.clone().unwrap_or_default();
        let kernel = spec.kernel.clone().unwrap_or_default();
        for p in std::iter::once(kernel.as_str())
            .chain(spec.initrd.as_deref())
            .chain(spec.disks.iter().map(|d| d.split(',').next().unwrap_or("")))
        {
            std::fs::File::open(p).map_err(|e| invalid(format!("Cannot read {p}: {e}")))?;
        }
        let mut argv: Vec<String> = vec![self.cfg.vmm.display().to_string()];
        let mut arg = |k: &str, v: String| {
            argv.push(k.into());
            argv.push(v);
        };
        arg("--kernel", kernel);
        if let Some(i) = &spec.initrd {
            arg("--initrd", i.clone());
        }
        for d in &spec.disks {
            arg("--disk", d.clone());
        }
        arg("--memory", memory_mib(&inst.config)?.to_string());
        arg("--cpus", vcpus(&inst.config)?.to_string());
        arg("--serial", "stdio".into());
        arg("--api-sock", self.cfg.vmm_socket(&inst.id).display().to_string());
        let mut cmdline = spec.cmdline.clone().unwrap_or_else(|| DEFAULT_CMDLINE.into());
        let atts = self.attachments_of_vm(&inst.id)?;
        let nets = self.store.networks()?;
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
            arg("--net", format!("tap={},mac={}", a.host_ifname, a.mac));
        }
        // The kernel configures its first interface when the command line does not say otherwise.
        if !cmdline.split_whitespace().any(|w| w.starts_with("ip=")) {
            if let Some((a, n)) = atts.iter().find_map(|a| {
                let n = nets.iter().find(|n| n.id == a.network_id)?;
                a.ip4.is_some().then_some((a, n))
            }) {
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
        arg("--cmdline", cmdline);
        if spec.pvm_guest_kernel {
            argv.push("--pvm-guest-kernel".into());
        }
        let path = self.vmm_command_file(&inst.id);
        std::fs::create_dir_all(self.cfg.instance_dir(&inst.id))
            .and_then(|()| {
                crate::supervisor::write_atomic(&path, &serde_json::to_vec(&argv).unwrap_or_default())
            })
            .map_err(|e| ManagerError::Internal(format!("Cannot write {}: {e}", path.display())))?;
        let _ = std::fs::remove_file(self.cfg.vmm_socket(&inst.id));
        Ok(path)
    }

    fn attachments_of_vm(&self, id: &str) -> Result<Vec<crate::store::AttachmentRecord>, ManagerError> {
        let mut atts: Vec<_> = self
            .store
            .attachments()?
            .into_iter()
            .filter(|a| a.instance_id == id)
            .collect();
        atts.sort_by_key(|a| a.seq);
        Ok(atts)
    }

    /// Before a start: a tap on its bridge for each recorded attachment (those there already stay, as a
    /// container's veths do; they go with the instance).
    pub(super) fn plumb_taps(&self, inst: &Instance) -> Result<(), ManagerError> {
        for a in self.attachments_of_vm(&inst.id)? {
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

    /// A signal for a VM: SIGKILL ends its VMM; SIGTERM, SIGINT and SIGPWR press its power button (the
    /// guest decides); others need a guest agent.
    pub(super) fn signal_vm(&self, inst: &Instance, sig: Signal) -> Result<(), ManagerError> {
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
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let (rx, tx) = dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if !taps.iter().any(|t| t == name.trim()) {
                return None;
            }
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            Some((*f.get(8)?, *f.first()?))
        })
        .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    VmUsage {
        cpu_ns,
        memory: rss,
        block_read: io_field("read_bytes:"),
        block_write: io_field("write_bytes:"),
        net_rx: rx,
        net_tx: tx,
    }
}
