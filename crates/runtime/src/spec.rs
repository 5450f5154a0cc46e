//! Loading a bundle's `config.json`: version check, capability-name tolerance, and the resolved rootfs path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::Spec;
use serde_json::Value;

/// The runtime-spec major version we implement; configs of another major are refused.
pub const SUPPORTED_MAJOR: u64 = 1;
/// The runtime-spec version we report in state and `features`.
pub const OCI_VERSION: &str = "1.2.0";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("Bundle {0} does not exist or is not a directory")]
    NoBundle(PathBuf),
    #[error("Cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("Malformed {path}: {source}")]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("Unsupported ociVersion {0:?} in config.json: vessel-runtime implements runtime-spec {SUPPORTED_MAJOR}.x")]
    Version(String),
    #[error("Invalid config.json: {0}")]
    Invalid(String),
}

/// A parsed, validated config with the bundle it came from.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    /// Absolute path of the root filesystem on the host.
    pub rootfs: PathBuf,
    /// Capability names that this kernel or library does not know; they were dropped with a warning.
    pub unknown_capabilities: Vec<String>,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Bundle, SpecError> {
        if !dir.is_dir() {
            return Err(SpecError::NoBundle(dir.to_path_buf()));
        }
        let dir = std::fs::canonicalize(dir).map_err(|_| SpecError::NoBundle(dir.to_path_buf()))?;
        let path = dir.join("config.json");
        let text = std::fs::read(&path).map_err(|source| SpecError::Read {
            path: path.clone(),
            source,
        })?;
        let (spec, unknown_capabilities) = parse_config(&text).map_err(|e| match e {
            ParseError::Json(source) => SpecError::Malformed {
                path: path.clone(),
                source,
            },
            ParseError::Spec(e) => e,
        })?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| SpecError::Invalid("root.path is missing".into()))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            dir.join(root.path())
        };
        if !rootfs.is_dir() {
            return Err(SpecError::Invalid(format!(
                "root.path {} is not a directory",
                rootfs.display()
            )));
        }
        Ok(Bundle {
            dir,
            spec,
            rootfs,
            unknown_capabilities,
        })
    }
}

enum ParseError {
    Json(serde_json::Error),
    Spec(SpecError),
}

/// Parse a config: reject other major versions, drop unknown capability names (warn, not fail, as runc does
/// since 1.1.x: a newer config may name capabilities an older kernel lacks).
fn parse_config(text: &[u8]) -> Result<(Spec, Vec<String>), ParseError> {
    let mut value: Value = serde_json::from_slice(text).map_err(ParseError::Json)?;
    check_version(&value).map_err(ParseError::Spec)?;
    let mut unknown = Vec::new();
    if let Some(caps) = value.pointer_mut("/process/capabilities") {
        unknown = retain_known_capabilities(caps);
    }
    let spec: Spec = serde_json::from_value(value).map_err(ParseError::Json)?;
    Ok((spec, unknown))
}

/// Parse a `process.json` (as given to `exec --process`), with the same capability tolerance.
pub fn parse_process(text: &[u8]) -> Result<(oci_spec::runtime::Process, Vec<String>), serde_json::Error> {
    let mut value: Value = serde_json::from_slice(text)?;
    let mut unknown = Vec::new();
    if let Some(caps) = value.pointer_mut("/capabilities") {
        unknown = retain_known_capabilities(caps);
    }
    Ok((serde_json::from_value(value)?, unknown))
}

fn check_version(value: &Value) -> Result<(), SpecError> {
    let version = value.get("ociVersion").and_then(Value::as_str).unwrap_or("");
    let major = version.split('.').next().and_then(|m| m.parse::<u64>().ok());
    match major {
        Some(SUPPORTED_MAJOR) => Ok(()),
        _ => Err(SpecError::Version(version.to_string())),
    }
}

fn retain_known_capabilities(caps: &mut Value) -> Vec<String> {
    let mut unknown = HashSet::new();
    if let Some(sets) = caps.as_object_mut() {
        for set in sets.values_mut() {
            if let Some(names) = set.as_array_mut() {
                names.retain(|n| {
                    let known = n.as_str().is_some_and(|s| caps::Capability::from_str(s).is_ok());
                    if !known {
                        unknown.insert(n.as_str().unwrap_or("?").to_string());
                    }
                    known
                });
            }
        }
    }
    let mut unknown: Vec<String> = unknown.into_iter().collect();
    unknown.sort();
    unknown
}

const DEFAULT_CAPS: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// The default config.json (`vessel-runtime spec`), the base every vessel container's config starts from.
pub fn default_spec() -> Value {
    serde_json::json!({
        // The version podman and containerd write; older runtimes (crun 1.8) refuse newer ones.
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": true,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS, "effective": DEFAULT_CAPS, "permitted": DEFAULT_CAPS
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "vessel",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [{ "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(version: &str) -> String {
        format!(
            r#"{{"ociVersion":"{version}","root":{{"path":"rootfs"}},"process":{{"cwd":"/","user":{{"uid":0,"gid":0}},"args":["sh"],
            "capabilities":{{"bounding":["CAP_CHOWN","CAP_FUTURE_THING"],"effective":["CAP_KILL"]}}}}}}"#
        )
    }

    #[test]
    fn accepts_1x_and_drops_unknown_capabilities() {
        let (spec, unknown) = parse_config(minimal("1.0.2-dev").as_bytes()).ok().unwrap();
        assert_eq!(unknown, vec!["CAP_FUTURE_THING".to_string()]);
        let caps = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 1);
    }

    #[test]
    fn refuses_other_major_versions() {
        for v in ["9.0.0", "", "x"] {
            match parse_config(minimal(v).as_bytes()) {
                Err(ParseError::Spec(SpecError::Version(got))) => assert_eq!(got, v),
                _ => panic!("version {v:?} accepted"),
            }
        }
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(matches!(parse_config(b"{not json"), Err(ParseError::Json(_))));
    }
}
