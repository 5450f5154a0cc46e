//! Request and response bodies. Every request type rejects unknown fields, so a client's typo is a 400, not
//! a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What isolates an instance. One API and one set of verbs for both; the kinds differ inside vesseld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Container,
    Vm,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Container => "container",
            Kind::Vm => "vm",
        })
    }
}

/// When vesseld starts an instance again after it exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// no, on-failure, always or unless-stopped.
    #[serde(default = "RestartPolicy::default_name")]
    pub name: String,
    /// For on-failure: at most this many restarts (0: no bound).
    #[serde(default)]
    pub max_retries: u32,
}

impl RestartPolicy {
    fn default_name() -> String {
        "no".into()
    }

    /// Parses docker's `--restart` syntax: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn parse(s: &str) -> Result<RestartPolicy, String> {
        let (name, n) = match s.split_once(':') {
            Some((name, n)) => (name, Some(n)),
            None => (s, None),
        };
        let max_retries = match (name, n) {
            ("on-failure", Some(n)) => n
                .parse()
                .map_err(|_| format!("Invalid restart policy {s:?}: the count after ':' must be a number"))?,
            (_, Some(_)) => {
                return Err(format!(
                    "Invalid restart policy {s:?}: only on-failure takes a count"
                ))
            }
            _ => 0,
        };
        let p = RestartPolicy {
            name: name.into(),
            max_retries,
        };
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), String> {
        match self.name.as_str() {
            "" | "no" | "always" | "unless-stopped" | "on-failure" => Ok(()),
            other => Err(format!(
                "Invalid restart policy {other:?}: use no, always, unless-stopped or on-failure[:N]"
            )),
        }
    }
}

/// Resource limits; all optional. Sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// Memory plus swap (docker's --memory-swap); -1 for unlimited swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<i64>,
    /// CPU time as a number of CPUs (quota over a 100 ms period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Relative CPU weight (docker's --cpu-shares, 2..262144).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// CPUs the instance may run on, e.g. "0-1" or "0,2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Block I/O weight (10..1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio_weight: Option<u16>,
    /// Block I/O throttles per device: bytes per second read / written, operations per second. A rate of
    /// 0 removes a device's throttle (in `update`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_read_bps: Option<Vec<DeviceRate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_write_bps: Option<Vec<DeviceRate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_read_iops: Option<Vec<DeviceRate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_write_iops: Option<Vec<DeviceRate>>,
}

/// A throttle on one block device (a whole disk, by its path on vesseld's host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceRate {
    pub path: String,
    pub rate: u64,
}

/// One resource limit of the process (`--ulimit nofile=1024:2048`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    /// The name without RLIMIT_, lower case: nofile, nproc, core, ...
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// `POST /1.0/instances`: everything an instance is made from. Stored as given (after validation), so an
/// instance can be re-made after a host restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Unique; default: a generated name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub image: String,
    #[serde(default)]
    pub kind: Kind,
    /// Replaces the image's CMD.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's ENTRYPOINT (an empty list clears it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// KEY=VALUE, over the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// USER[:GROUP], names resolved in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Give the process a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open for an attached client.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub read_only: bool,
    /// Capabilities added to or dropped from the default set (with or without CAP_, or ALL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// tmpfs mounts: PATH or PATH:OPTIONS (e.g. "/run:size=64m").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// Run a reaper as PID 1 that starts the command and passes signals to it.
    #[serde(default)]
    pub init: bool,
    /// Delete the instance when it exits (docker's --rm).
    #[serde(default)]
    pub auto_remove: bool,
    /// Signal that `stop` sends first (default: the image's STOPSIGNAL, else SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    /// "host": the host's user ids; "auto": a user namespace of its own, root inside being an unprivileged
    /// host uid from vesseld's subordinate range (see `InstanceState.idmap`). Default: vesseld's
    /// `--userns-default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<String>,
    /// Bind mounts from the host: HOST_PATH:CONTAINER_PATH[:ro] (both absolute).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// "none" (a loopback only), "host" (the host's network) or, when absent, the networks in `networks`
    /// (default: the network vessel0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<crate::NetworkRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::PortMapping>,
    /// Resolvers for the instance's resolv.conf instead of its network's (or the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Bandwidth limit of each of its interfaces, each way, in bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rate: Option<u64>,
    /// A microVM's own boot parts (kind vm). With a kernel and no image it is a raw VM: its own kernel and
    /// OS, no guest agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmSpec>,
}

/// What a microVM boots (`vessel create --vm [--kernel ...]`). Its memory is `limits.memory` (default
/// 256 MiB) and its vCPUs `limits.cpus` rounded up (default 1). Made from an image, it boots vessel's guest
/// kernel (or `kernel`) with vessel-agent as its init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// The kernel on the daemon's host (bzImage or ELF vmlinux), absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// The kernel's command line (default: a serial console, and `ip=` for the first network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Raw disk images on the daemon's host as virtio-blk devices, in order: PATH[,ro].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<String>,
    /// The kernel is built as a PVM guest (how a VM boots where /dev/kvm is kvm-pvm).
    #[serde(default)]
    pub pvm_guest_kernel: bool,
    /// A VM made from an image: the size of its own writable disk in bytes (default 1 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<u64>,
}

/// The host ids an instance's user namespace maps: its ids 0..size are host uids uid..uid+size (gids alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdMap {
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

/// An instance's life cycle as vesseld records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being made (a row exists, the root filesystem may not yet).
    Creating,
    /// Made, never started or started and cleaned up for a new start.
    Created,
    /// Its supervisor is being started.
    Starting,
    Running,
    Paused,
    /// Its process exited (or its supervisor died); see `exit_code`.
    Exited,
    /// Being deleted.
    Deleting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
            Status::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "creating" => Status::Creating,
            "created" => Status::Created,
            "starting" => Status::Starting,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "exited" => Status::Exited,
            "deleting" => Status::Deleting,
            _ => return None,
        })
    }

    /// Whether the instance's process is (or may be) alive.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Starting | Status::Running | Status::Paused)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The live part of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceState {
    pub status: Status,
    /// The instance's main process on the host, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Of the last run: 128 + N when killed by signal N; absent when unknown (its supervisor died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Restarts made by the restart policy.
    #[serde(default)]
    pub restart_count: u32,
    /// Set by `stop` (and `kill`): the restart policy `unless-stopped` leaves it down, also after a host restart.
    #[serde(default)]
    pub stopped_by_user: bool,
    /// Its user namespace's mapping (userns auto), given at create and kept for its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<IdMap>,
}

/// `GET /1.0/instances/NAME` and each entry of `GET /1.0/instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Instance {
    /// 64 hex digits; any unique prefix names it too.
    pub id: String,
    pub name: String,
    pub kind: Kind,
    /// The image as named at create, and its id (config digest).
    pub image: String,
    pub image_id: String,
    pub created_at: String,
    pub config: InstanceConfig,
    pub state: InstanceState,
    /// Its network interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<crate::Attachment>,
}

/// `PUT /1.0/instances/NAME/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StateChange {
    /// start, stop, restart, kill, pause or resume.
    pub action: String,
    /// stop and restart: seconds before SIGKILL (default: the instance's stop timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// kill: the signal (name or number; default SIGKILL). stop: the first signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// `POST /1.0/instances/NAME/rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub name: String,
}

/// `POST /1.0/instances/NAME/exec`: the process to run, then the connection carries its streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default)]
    pub tty: bool,
    /// Pass the client's stdin.
    #[serde(default)]
    pub stdin: bool,
    /// With `tty`: the client's terminal size, set on the pty before the process runs (a resize frame
    /// after the upgrade could come too late for a program that reads it at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
}

/// The answer of `wait`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitResult {
    /// Absent when the exit status is unknown (the supervisor was killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// One line of an instance's log, as stored and as `GET .../logs` streams it (docker's json-file shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogRecord {
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    /// stdout or stderr.
    pub stream: String,
    pub log: String,
}

/// One lifecycle event of `GET /1.0/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub time: String,
    /// created, started, died, oom, paused, resumed, stopped, deleted, renamed, restarted, updated.
    pub action: String,
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Every error body: one line, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /1.0`: the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Info {
    pub name: String,
    pub version: String,
    pub api_version: String,
    pub root: String,
    pub pid: u32,
    pub instances: u64,
    pub running: u64,
    pub cgroup_parent: String,
}

/// `GET /1.0/instances/NAME/top`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Top {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// `GET /1.0/instances/NAME/stats`: one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    pub id: String,
    pub name: String,
    pub time: String,
    /// Total CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// CPU use since the previous sample of a stream (or over 100 ms for a single one), 100 = one CPU.
    pub cpu_percent: f64,
    pub memory_usage: u64,
    /// The limit, or the host's memory when there is none.
    pub memory_limit: u64,
    pub pids: u64,
    #[serde(default)]
    pub pids_limit: Option<u64>,
    pub block_read: u64,
    pub block_write: u64,
    pub net_rx: u64,
    pub net_tx: u64,
}

/// `PATCH /1.0/instances/NAME`: live changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InstanceUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_as_docker_writes_them() {
        assert_eq!(RestartPolicy::parse("on-failure:3").unwrap().max_retries, 3);
        assert_eq!(RestartPolicy::parse("always").unwrap().name, "always");
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("always:2").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<InstanceConfig>(r#"{"image":"x","memroy":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `memroy`"), "{e}");
        assert!(serde_json::from_str::<StateChange>(r#"{"action":"stop","force":true}"#).is_err());
        assert!(serde_json::from_str::<Limits>(r#"{"cpu":1}"#).is_err());
    }
}
