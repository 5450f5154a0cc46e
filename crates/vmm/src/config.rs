//! What a VM is made of, from command-line flags or a JSON file, checked before anything is built.

use crate::arch::layout::VIRTIO_MAX_DEVICES;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;

/// The default command line: a console on COM1, and a reboot (a VMM exit) instead of a hang on panic.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("Config file {path} is not a valid VM config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("Invalid disk {spec:?}: {why} (expected PATH[,ro][,id=NAME])")]
    Disk { spec: String, why: &'static str },
    #[error("Invalid NIC {spec:?}: {why} (expected tap=NAME[,mac=XX:XX:XX:XX:XX:XX])")]
    Nic { spec: String, why: &'static str },
    #[error("Invalid MAC address {0:?}: expected six hex bytes like 52:54:00:12:34:56, not multicast")]
    Mac(String),
    #[error("Invalid vsock {spec:?}: {why} (expected cid=N,path=PATH)")]
    Vsock { spec: String, why: &'static str },
    #[error("Invalid vsock: guest CID {0} is reserved or too large: it must be between 3 and 4294967294")]
    VsockCid(u64),
    #[error("Invalid vsock: the host socket path (uds_path) is empty")]
    VsockPath,
    #[error(transparent)]
    TapName(#[from] crate::devices::virtio::net::NetError),
    #[error("Invalid serial {0:?}: expected stdio, none or file:PATH")]
    Serial(String),
    #[error("Only one of the serial port and the virtio console can use stdio")]
    TwoStdioConsoles,
    #[error("A VM needs 1 to 254 vCPUs, not {0}")]
    Cpus(u16),
    #[error(
        "Too many devices: {disks} disks with the NICs, vsock, entropy device and console exceed the {max} virtio slots"
    )]
    TooManyDevices { disks: usize, max: u32 },
    #[error("Kernel {0} does not exist")]
    KernelMissing(PathBuf),
    #[error("Initramfs {0} does not exist")]
    InitrdMissing(PathBuf),
    #[error("Disk {0} does not exist")]
    DiskMissing(PathBuf),
}

/// A whole VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    #[serde(default = "default_cpus")]
    pub cpus: u16,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub serial: SerialConfig,
    /// A virtio console (hvc0 in the guest): none by default.
    #[serde(default = "no_console")]
    pub console: SerialConfig,
    /// virtio-net NICs, each backed by a tap device.
    #[serde(default)]
    pub nics: Vec<NicConfig>,
    /// A virtio-vsock device with its host side on a unix socket.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// A virtio entropy device, so the guest's random pool fills at boot.
    #[serde(default = "yes")]
    pub rng: bool,
    /// The kernel was built as a PVM guest: boot it even though /dev/kvm is kvm-pvm.
    #[serde(default)]
    pub pvm_guest_kernel: bool,
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_owned()
}
fn default_cpus() -> u16 {
    1
}
fn default_memory_mib() -> u64 {
    128
}
fn no_console() -> SerialConfig {
    SerialConfig::None
}
fn yes() -> bool {
    true
}

/// A raw disk image attached as virtio-blk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// What the guest reads as the disk's serial (GET_ID); defaults to its index.
    #[serde(default)]
    pub id: Option<String>,
}

impl FromStr for DiskConfig {
    type Err = ConfigError;
    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let err = |why| ConfigError::Disk {
            spec: spec.to_owned(),
            why,
        };
        let mut parts = spec.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| err("no path"))?;
        let mut disk = DiskConfig {
            path: path.into(),
            read_only: false,
            id: None,
        };
        for option in parts {
            match option.split_once('=') {
                None if option == "ro" => disk.read_only = true,
                None if option == "rw" => disk.read_only = false,
                Some(("id", id)) if !id.is_empty() && id.len() <= 20 => disk.id = Some(id.to_owned()),
                Some(("id", _)) => return Err(err("id must be 1 to 20 bytes")),
                _ => return Err(err("unknown option")),
            }
        }
        Ok(disk)
    }
}

/// A NIC: the host's tap device (created if missing) and the guest's MAC (random if absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicConfig {
    pub tap: String,
    #[serde(default)]
    pub mac: Option<String>,
    /// The API's `iface_id`, which names the NIC for later requests; none from the command line.
    #[serde(default)]
    pub id: Option<String>,
}

impl NicConfig {
    /// Checks the tap name (the kernel's rules for interface names) and the MAC.
    pub fn check(&self) -> Result<(), ConfigError> {
        crate::devices::virtio::net::check_tap_name(&self.tap)?;
        self.mac_bytes()?;
        Ok(())
    }

    /// The MAC as bytes, if one was given.
    pub fn mac_bytes(&self) -> Result<Option<[u8; 6]>, ConfigError> {
        let Some(text) = &self.mac else { return Ok(None) };
        let err = || ConfigError::Mac(text.clone());
        let parts: Vec<u8> = text
            .split(':')
            .map(|p| {
                if p.len() == 2 {
                    u8::from_str_radix(p, 16).map_err(|_| err())
                } else {
                    Err(err())
                }
            })
            .collect::<Result<_, _>>()?;
        let mac: [u8; 6] = parts.try_into().map_err(|_| err())?;
        if mac[0] & 1 != 0 {
            return Err(err());
        }
        Ok(Some(mac))
    }
}

impl FromStr for NicConfig {
    type Err = ConfigError;
    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let err = |why| ConfigError::Nic {
            spec: spec.to_owned(),
            why,
        };
        let mut nic = NicConfig {
            tap: String::new(),
            mac: None,
            id: None,
        };
        for option in spec.split(',') {
            match option.split_once('=') {
                Some(("tap", tap)) if !tap.is_empty() => nic.tap = tap.to_owned(),
                Some(("mac", mac)) => nic.mac = Some(mac.to_owned()),
                _ => return Err(err("unknown option")),
            }
        }
        if nic.tap.is_empty() {
            return Err(err("no tap"));
        }
        nic.mac_bytes()?;
        Ok(nic)
    }
}

/// The vsock device: the guest's context id and the host socket path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
}

impl VsockConfig {
    /// Checks the CID (the range the vsock device accepts) and that a socket path is given.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !crate::devices::virtio::vsock::GUEST_CIDS.contains(&self.guest_cid) {
            return Err(ConfigError::VsockCid(self.guest_cid));
        }
        if self.uds_path.as_os_str().is_empty() {
            return Err(ConfigError::VsockPath);
        }
        Ok(())
    }
}

impl FromStr for VsockConfig {
    type Err = ConfigError;
    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let err = |why| ConfigError::Vsock {
            spec: spec.to_owned(),
            why,
        };
        let (mut cid, mut path) = (None, None);
        for option in spec.split(',') {
            match option.split_once('=') {
                Some(("cid", n)) => cid = Some(n.parse().map_err(|_| err("cid is not a number"))?),
                Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
                _ => return Err(err("unknown option")),
            }
        }
        match (cid, path) {
            (Some(guest_cid), Some(uds_path)) => Ok(VsockConfig { guest_cid, uds_path }),
            _ => Err(err("both cid and path are needed")),
        }
    }
}

/// Where a console's output goes (COM1 or the virtio console); `Stdio` also feeds it stdin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialConfig {
    #[default]
    Stdio,
    File(PathBuf),
    None,
}

impl FromStr for SerialConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "stdio" => Ok(SerialConfig::Stdio),
            "none" => Ok(SerialConfig::None),
            _ => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(SerialConfig::File(path.into())),
                _ => Err(ConfigError::Serial(s.to_owned())),
            },
        }
    }
}

impl std::fmt::Display for SerialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SerialConfig::Stdio => write!(f, "stdio"),
            SerialConfig::None => write!(f, "none"),
            SerialConfig::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl Serialize for SerialConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SerialConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl VmConfig {
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks what can be checked without touching KVM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cpus == 0 || self.cpus > 254 {
            return Err(ConfigError::Cpus(self.cpus));
        }
        if self.serial == SerialConfig::Stdio && self.console == SerialConfig::Stdio {
            return Err(ConfigError::TwoStdioConsoles);
        }
        let devices = self.disks.len()
            + self.nics.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.rng)
            + usize::from(self.console != SerialConfig::None);
        for nic in &self.nics {
            nic.check()?;
        }
        if let Some(vsock) = &self.vsock {
            vsock.check()?;
        }
        if devices > VIRTIO_MAX_DEVICES as usize {
            return Err(ConfigError::TooManyDevices {
                disks: self.disks.len(),
                max: VIRTIO_MAX_DEVICES,
            });
        }
        if !self.kernel.exists() {
            return Err(ConfigError::KernelMissing(self.kernel.clone()));
        }
        if let Some(initrd) = self.initrd.as_ref().filter(|p| !p.exists()) {
            return Err(ConfigError::InitrdMissing(initrd.clone()));
        }
        if let Some(disk) = self.disks.iter().find(|d| !d.path.exists()) {
            return Err(ConfigError::DiskMissing(disk.path.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_and_serial_specs_parse() {
        let disk: DiskConfig = "/d.img,ro,id=root".parse().unwrap();
        assert_eq!(
            disk,
            DiskConfig {
                path: "/d.img".into(),
                read_only: true,
                id: Some("root".into())
            }
        );
        assert!("".parse::<DiskConfig>().is_err());
        assert!("/d.img,rx".parse::<DiskConfig>().is_err());
        assert!("/d.img,id=".parse::<DiskConfig>().is_err());
        assert_eq!(
            "file:/tmp/x".parse::<SerialConfig>().unwrap(),
            SerialConfig::File("/tmp/x".into())
        );
        assert!("tty".parse::<SerialConfig>().is_err());
        let nic: NicConfig = "tap=vtap0,mac=52:54:00:12:34:56".parse().unwrap();
        assert_eq!(nic.mac_bytes().unwrap(), Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert!(
            "tap=x,mac=01:00:00:00:00:00".parse::<NicConfig>().is_err(),
            "multicast"
        );
        assert!("tap=x,mac=52:54".parse::<NicConfig>().is_err());
        assert!("mac=52:54:00:12:34:56".parse::<NicConfig>().is_err());
        let vsock: VsockConfig = "cid=3,path=/tmp/v.sock".parse().unwrap();
        assert_eq!(
            (vsock.guest_cid, vsock.uds_path.to_str()),
            (3, Some("/tmp/v.sock"))
        );
        assert!("cid=x,path=/p".parse::<VsockConfig>().is_err());
        let config = |json: &str| serde_json::from_str::<VmConfig>(json).unwrap();
        // A config written before NICs had ids still reads.
        let old = config(r#"{"kernel": "/k", "nics": [{"tap": "t0", "mac": null}]}"#);
        assert_eq!(old.nics[0].id, None);
    }

    #[test]
    fn nic_and_vsock_checks_name_the_problem() {
        let nic = |tap: &str, mac: Option<&str>| NicConfig {
            tap: tap.into(),
            mac: mac.map(Into::into),
            id: None,
        };
        nic("tap0", Some("52:54:00:12:34:56")).check().unwrap();
        let err = nic("", None).check().unwrap_err();
        assert!(err.to_string().contains("not a valid interface name"), "{err}");
        let err = nic("a-very-long-tap-name", None).check().unwrap_err();
        assert!(err.to_string().contains("longer than 15 bytes"), "{err}");
        let err = nic("tap0", Some("52:54:00")).check().unwrap_err();
        assert!(matches!(err, ConfigError::Mac(_)), "{err}");
        let vsock = |guest_cid, path: &str| VsockConfig {
            guest_cid,
            uds_path: path.into(),
        };
        vsock(3, "/v.sock").check().unwrap();
        for cid in [0, 1, 2, u64::from(u32::MAX)] {
            let err = vsock(cid, "/v.sock").check().unwrap_err();
            assert!(err.to_string().contains("guest CID"), "{err}");
        }
        assert!(matches!(vsock(3, "").check(), Err(ConfigError::VsockPath)));
    }

    #[test]
    fn json_rejects_unknown_fields_and_fills_defaults() {
        let cfg: VmConfig = serde_json::from_str(r#"{"kernel": "/k", "serial": "none"}"#).unwrap();
        assert_eq!(
            (cfg.cpus, cfg.memory_mib, cfg.serial, cfg.rng),
            (1, 128, SerialConfig::None, true)
        );
        let err = serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "vcpus": 2}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `vcpus`"), "{err}");
        let err = serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "serial": "tty"}"#).unwrap_err();
        assert!(err.to_string().contains("stdio, none or file:PATH"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut cfg: VmConfig = serde_json::from_str(r#"{"kernel": "/nonexistent/k"}"#).unwrap();
        assert!(matches!(cfg.validate(), Err(ConfigError::KernelMissing(_))));
        cfg.cpus = 0;
        assert!(matches!(cfg.validate(), Err(ConfigError::Cpus(0))));
        cfg.cpus = 1;
        cfg.console = SerialConfig::Stdio;
        assert!(matches!(cfg.validate(), Err(ConfigError::TwoStdioConsoles)));
        cfg.console = SerialConfig::None;
        cfg.disks = vec!["/x".parse().unwrap(); 18];
        assert!(matches!(cfg.validate(), Err(ConfigError::TooManyDevices { .. })));
    }
}
