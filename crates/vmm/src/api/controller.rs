//! What the API does with a request: route it, check it against the instance's state, change the
//! pending configuration or the running VM, and answer. It lives on the API thread alone, so
//! requests are applied one at a time, in order, without locks.

use super::http::{Request, Response};
use super::models::*;
use crate::config::{ConfigError, DiskConfig, NicConfig, VmConfig, VsockConfig};
use crate::exit::VmExit;
use crate::launch;
use crate::memory::{MemoryError, MIN_LINUX_MIB};
use crate::vm::RunningVm;
use serde::de::DeserializeOwned;
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Why a request failed: its status, the `fault_message`, and for 405 the allowed methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            allow: None,
        }
    }
}

fn bad(message: impl ToString) -> ApiError {
    ApiError::new(400, message.to_string())
}

/// The resources the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource<'a> {
    Root,
    BootSource,
    MachineConfig,
    Drive(&'a str),
    NetworkInterface(&'a str),
    Vsock,
    Actions,
    Vm,
    VmConfig,
    Metrics,
    SnapshotCreate,
}

impl<'a> Resource<'a> {
    fn find(path: &'a str) -> Option<Self> {
        Some(match path {
            "/" => Resource::Root,
            "/boot-source" => Resource::BootSource,
            "/machine-config" => Resource::MachineConfig,
            "/actions" => Resource::Actions,
            "/vm" => Resource::Vm,
            "/vm/config" => Resource::VmConfig,
            "/metrics" => Resource::Metrics,
            "/snapshot/create" => Resource::SnapshotCreate,
            "/vsock" => Resource::Vsock,
            _ => {
                if let Some(id) = item(path, "/drives/") {
                    Resource::Drive(id)
                } else if let Some(id) = item(path, "/network-interfaces/") {
                    Resource::NetworkInterface(id)
                } else {
                    return None;
                }
            }
        })
    }

    /// The methods the resource answers (the `Allow` header of a 405).
    fn allowed(self) -> &'static str {
        match self {
            Resource::Root | Resource::VmConfig | Resource::Metrics => "GET",
            Resource::BootSource
            | Resource::Drive(_)
            | Resource::NetworkInterface(_)
            | Resource::Vsock
            | Resource::Actions
            | Resource::SnapshotCreate => "PUT",
            Resource::MachineConfig => "GET, PUT, PATCH",
            Resource::Vm => "PATCH",
        }
    }
}

/// `{id}` in `{prefix}{id}`: one non-empty path segment.
fn item<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

enum Phase {
    NotStarted,
    Started { vm: Arc<RunningVm>, since: Instant },
}

#[derive(Default)]
struct Counters {
    requests: u64,
    errors: u64,
    pauses: u64,
    resumes: u64,
    paused_since: Option<Instant>,
    paused_total: Duration,
}

/// The instance as the API sees it.
pub struct Controller {
    id: String,
    created: Instant,
    /// What the command line said: the values a PUT falls back to for fields it leaves out.
    defaults: VmConfig,
    config: VmConfig,
    boot_source: bool,
    phase: Phase,
    /// Set by whoever waits for the VM's end, once it ended.
    exit: Arc<OnceLock<VmExit>>,
    /// Where the VM goes once InstanceStart started it (to the thread that waits for its end).
    on_start: Option<Sender<Arc<RunningVm>>>,
    counters: Counters,
}

impl Controller {
    /// An instance waiting for its configuration; `defaults` holds the command line's values and
    /// `on_start` receives the VM when InstanceStart starts it.
    pub fn new(defaults: VmConfig, on_start: Sender<Arc<RunningVm>>, exit: Arc<OnceLock<VmExit>>) -> Self {
        Controller {
            id: instance_id(),
            created: Instant::now(),
            config: defaults.clone(),
            defaults,
            boot_source: false,
            phase: Phase::NotStarted,
            exit,
            on_start: Some(on_start),
            counters: Counters::default(),
        }
    }

    /// An instance whose VM was built from `config` and started before the API came up.
    pub fn running(config: VmConfig, vm: Arc<RunningVm>, exit: Arc<OnceLock<VmExit>>) -> Self {
        Controller {
            id: instance_id(),
            created: Instant::now(),
            defaults: config.clone(),
            config,
            boot_source: true,
            phase: Phase::Started {
                vm,
                since: Instant::now(),
            },
            exit,
            on_start: None,
            counters: Counters::default(),
        }
    }

    pub fn state(&self) -> InstanceState {
        if self.exit.get().is_some() {
            return InstanceState::Exited;
        }
        match &self.phase {
            Phase::NotStarted => InstanceState::NotStarted,
            Phase::Started { vm, .. } if vm.is_paused() => InstanceState::Paused,
            Phase::Started { .. } => InstanceState::Running,
        }
    }

    /// Answers one request.
    pub fn handle(&mut self, request: &Request) -> Response {
        self.counters.requests += 1;
        let response = match self.route(&request.method, request.path(), &request.body) {
            Ok(response) => response,
            Err(e) => Response {
                allow: e.allow,
                ..Response::fault(e.status, &e.message)
            },
        };
        if response.status >= 400 {
            self.counters.errors += 1;
        }
        response
    }

    fn route(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response, ApiError> {
        let resource =
            Resource::find(path).ok_or_else(|| ApiError::new(404, format!("No resource at {path}")))?;
        match (resource, method) {
            (Resource::Root, "GET") => Ok(Response::json(200, &self.info())),
            (Resource::BootSource, "PUT") => self.put_boot_source(parse(body)?),
            (Resource::MachineConfig, "GET") => Ok(Response::json(200, &self.machine_config())),
            (Resource::MachineConfig, "PUT") => self.put_machine_config(parse(body)?),
            (Resource::MachineConfig, "PATCH") => self.patch_machine_config(parse(body)?),
            (Resource::Drive(id), "PUT") => self.put_drive(id, parse(body)?),
            (Resource::NetworkInterface(id), "PUT") => self.put_network_interface(id, parse(body)?),
            (Resource::Vsock, "PUT") => self.put_vsock(parse(body)?),
            (Resource::Actions, "PUT") => self.action(parse(body)?),
            (Resource::Vm, "PATCH") => self.patch_vm(parse(body)?),
            (Resource::SnapshotCreate, "PUT") => self.create_snapshot(parse(body)?),
            (Resource::VmConfig, "GET") => Ok(Response::json(200, &self.config)),
            (Resource::Metrics, "GET") => Ok(Response::json(200, &self.metrics())),
            (resource, _) => Err(ApiError {
                allow: Some(resource.allowed()),
                ..ApiError::new(
                    405,
                    format!(
                        "{method} is not allowed on {path} (allowed: {})",
                        resource.allowed()
                    ),
                )
            }),
        }
    }

    fn info(&self) -> InstanceInfo {
        InstanceInfo {
            id: self.id.clone(),
            state: self.state(),
            vmm_version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Configuration changes are for a VM that has not started.
    fn ensure_not_started(&self, what: &str) -> Result<(), ApiError> {
        match self.state() {
            InstanceState::NotStarted => Ok(()),
            InstanceState::Exited => Err(ApiError::new(409, "The VM has exited")),
            _ => Err(ApiError::new(
                409,
                format!("{what} can only be changed before the VM starts"),
            )),
        }
    }

    fn put_boot_source(&mut self, source: BootSource) -> Result<Response, ApiError> {
        self.ensure_not_started("The boot source")?;
        if !source.kernel_image_path.exists() {
            return Err(bad(ConfigError::KernelMissing(source.kernel_image_path)));
        }
        if let Some(initrd) = source.initrd_path.as_ref().filter(|p| !p.exists()) {
            return Err(bad(ConfigError::InitrdMissing(initrd.clone())));
        }
        self.config.kernel = source.kernel_image_path;
        self.config.initrd = source.initrd_path;
        self.config.cmdline = source.boot_args.unwrap_or_else(|| self.defaults.cmdline.clone());
        self.boot_source = true;
        Ok(Response::no_content())
    }

    fn machine_config(&self) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.config.cpus,
            mem_size_mib: self.config.memory_mib,
            pvm_guest_kernel: Some(self.config.pvm_guest_kernel),
        }
    }

    fn put_machine_config(&mut self, machine: MachineConfig) -> Result<Response, ApiError> {
        let pvm = machine.pvm_guest_kernel.or(Some(self.defaults.pvm_guest_kernel));
        self.patch_machine_config(MachineConfigUpdate {
            vcpu_count: Some(machine.vcpu_count),
            mem_size_mib: Some(machine.mem_size_mib),
            pvm_guest_kernel: pvm,
        })
    }

    fn patch_machine_config(&mut self, update: MachineConfigUpdate) -> Result<Response, ApiError> {
        self.ensure_not_started("The machine configuration")?;
        if let Some(cpus) = update.vcpu_count.filter(|&n| n == 0 || n > 254) {
            return Err(bad(ConfigError::Cpus(cpus)));
        }
        if let Some(mib) = update.mem_size_mib.filter(|&mib| mib < MIN_LINUX_MIB) {
            return Err(bad(MemoryError::TooSmall(mib)));
        }
        self.config.cpus = update.vcpu_count.unwrap_or(self.config.cpus);
        self.config.memory_mib = update.mem_size_mib.unwrap_or(self.config.memory_mib);
        self.config.pvm_guest_kernel = update.pvm_guest_kernel.unwrap_or(self.config.pvm_guest_kernel);
        Ok(Response::no_content())
    }

    fn put_drive(&mut self, path_id: &str, drive: Drive) -> Result<Response, ApiError> {
        if drive.drive_id != path_id {
            return Err(bad(format!(
                "drive_id {:?} in the body differs from {path_id:?} in the path",
                drive.drive_id
            )));
        }
        check_id("drive_id", path_id)?;
        self.ensure_not_started("Drives")?;
        if !drive.path_on_host.exists() {
            return Err(bad(ConfigError::DiskMissing(drive.path_on_host)));
        }
        let disk = DiskConfig {
            path: drive.path_on_host,
            read_only: drive.is_read_only,
            id: Some(drive.drive_id),
        };
        match self.config.disks.iter_mut().find(|d| d.id == disk.id) {
            Some(existing) => *existing = disk,
            None => self.config.disks.push(disk),
        }
        Ok(Response::no_content())
    }

    fn put_network_interface(
        &mut self,
        path_id: &str,
        iface: NetworkInterface,
    ) -> Result<Response, ApiError> {
        if iface.iface_id != path_id {
            return Err(bad(format!(
                "iface_id {:?} in the body differs from {path_id:?} in the path",
                iface.iface_id
            )));
        }
        check_id("iface_id", path_id)?;
        let nic = NicConfig {
            tap: iface.host_dev_name,
            mac: iface.guest_mac,
            id: Some(iface.iface_id),
        };
        nic.check().map_err(bad)?;
        self.ensure_not_started("Network interfaces")?;
        match self.config.nics.iter_mut().find(|n| n.id == nic.id) {
            Some(existing) => *existing = nic,
            None => self.config.nics.push(nic),
        }
        Ok(Response::no_content())
    }

    fn put_vsock(&mut self, vsock: Vsock) -> Result<Response, ApiError> {
        let vsock = VsockConfig {
            guest_cid: vsock.guest_cid,
            uds_path: vsock.uds_path,
        };
        vsock.check().map_err(bad)?;
        self.ensure_not_started("The vsock device")?;
        self.config.vsock = Some(vsock);
        Ok(Response::no_content())
    }

    fn action(&mut self, action: Action) -> Result<Response, ApiError> {
        match action.action_type {
            ActionType::InstanceStart => self.start(),
            ActionType::PressPowerButton => self.press_power_button(),
            ActionType::SendCtrlAltDel => Err(bad(
                "SendCtrlAltDel is not supported: the VM has no i8042 keyboard (its ACPI tables declare \
                 none, so the guest does not look for one); PressPowerButton asks the guest to shut down",
            )),
        }
    }

    /// Signals a power-button press through the ACPI event device; the guest decides what to do.
    fn press_power_button(&mut self) -> Result<Response, ApiError> {
        if self.state() == InstanceState::Paused {
            return Err(ApiError::new(
                409,
                "The VM is paused: resume it so that the guest can act on the power button",
            ));
        }
        let vm = self.started_vm()?;
        let ged = vm.extras().ged.as_ref().ok_or_else(|| {
            ApiError::new(
                500,
                "This VM was built without the ACPI event device (no power button)",
            )
        })?;
        ged.press_power_button()
            .map_err(|e| ApiError::new(500, e.to_string()))?;
        Ok(Response::no_content())
    }

    fn start(&mut self) -> Result<Response, ApiError> {
        match self.state() {
            InstanceState::NotStarted => {}
            InstanceState::Exited => return Err(ApiError::new(409, "The VM has exited")),
            _ => return Err(ApiError::new(409, "The VM has already started")),
        }
        if !self.boot_source {
            return Err(bad("No boot source: PUT /boot-source before InstanceStart"));
        }
        let kvm = launch::open_kvm(&self.config).map_err(bad)?;
        let vm = launch::build(&kvm, &self.config).map_err(bad)?;
        let vm = Arc::new(vm.start().map_err(|e| ApiError::new(500, e.to_string()))?);
        if let Some(on_start) = self.on_start.take() {
            // Nobody waiting means the process is on its way out; the VM still runs until then.
            let _ = on_start.send(vm.clone());
        }
        self.phase = Phase::Started {
            vm,
            since: Instant::now(),
        };
        Ok(Response::no_content())
    }

    /// Saves the VM to one file; a running VM is paused for it and resumed after.
    fn create_snapshot(&mut self, request: SnapshotCreate) -> Result<Response, ApiError> {
        let vm = self.started_vm()?;
        crate::snapshot::create(vm, &request.snapshot_path).map_err(|e| ApiError::new(400, e.to_string()))?;
        Ok(Response::no_content())
    }

    /// The VM, if it started and has not exited (409 otherwise).
    fn started_vm(&self) -> Result<&Arc<RunningVm>, ApiError> {
        let state = self.state();
        match &self.phase {
            Phase::Started { vm, .. } if state != InstanceState::Exited => Ok(vm),
            _ => {
                let state = serde_json::to_string(&state).unwrap_or_default();
                Err(ApiError::new(
                    409,
                    format!("The VM is not running (state {state})"),
                ))
            }
        }
    }

    fn patch_vm(&mut self, update: VmStateUpdate) -> Result<Response, ApiError> {
        let state = self.state();
        let vm = match &self.phase {
            Phase::Started { vm, .. } if state != InstanceState::Exited => vm,
            _ => {
                let state = serde_json::to_string(&state).unwrap_or_default();
                return Err(ApiError::new(
                    409,
                    format!("The VM is not running (state {state})"),
                ));
            }
        };
        // A request for the state the VM is in changes nothing and succeeds.
        match update.state {
            RequestedState::Paused if !vm.is_paused() => {
                vm.pause();
                self.counters.pauses += 1;
                self.counters.paused_since = Some(Instant::now());
            }
            RequestedState::Resumed if vm.is_paused() => {
                vm.resume();
                self.counters.resumes += 1;
                if let Some(since) = self.counters.paused_since.take() {
                    self.counters.paused_total += since.elapsed();
                }
            }
            _ => {}
        }
        Ok(Response::no_content())
    }

    fn metrics(&self) -> Metrics {
        let c = &self.counters;
        let paused = c.paused_total + c.paused_since.map_or(Duration::ZERO, |since| since.elapsed());
        Metrics {
            state: self.state(),
            uptime_ms: millis(self.created.elapsed()),
            vm_uptime_ms: match &self.phase {
                Phase::Started { since, .. } => Some(millis(since.elapsed())),
                Phase::NotStarted => None,
            },
            vcpu_count: self.config.cpus,
            mem_size_mib: self.config.memory_mib,
            drive_count: self.config.disks.len(),
            pause_count: c.pauses,
            resume_count: c.resumes,
            paused_ms: millis(paused),
            api_requests: c.requests,
            api_errors: c.errors,
            devices: match &self.phase {
                Phase::Started { vm, .. } => vm.device_metrics(),
                Phase::NotStarted => Vec::new(),
            },
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An id unique on this host while the process lives.
fn instance_id() -> String {
    format!("vessel-vmm-{}", std::process::id())
}

/// Drive and interface ids. A drive id is also the disk's serial in the guest (virtio-blk
/// GET_ID: at most 20 bytes); interface ids follow the same rule so that both look alike.
fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    let valid_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if id.is_empty() || id.len() > 20 || !valid_chars {
        return Err(bad(format!(
            "Invalid {field} {id:?}: 1 to 20 characters of A-Z, a-z, 0-9, '_' and '-'"
        )));
    }
    Ok(())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("This request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("Invalid request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn controller() -> Controller {
        let defaults: VmConfig = serde_json::from_str(r#"{"kernel": "", "pvm_guest_kernel": true}"#).unwrap();
        Controller::new(defaults, channel().0, Arc::default())
    }

    fn call(c: &mut Controller, method: &str, target: &str, body: &str) -> (u16, String) {
        let request = Request {
            method: method.into(),
            target: target.into(),
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        };
        let response = c.handle(&request);
        (
            response.status,
            String::from_utf8(response.body.unwrap_or_default()).unwrap(),
        )
    }

    #[test]
    fn machine_config_is_set_checked_and_read_back() {
        let mut c = controller();
        let put = r#"{"vcpu_count": 2, "mem_size_mib": 64}"#;
        assert_eq!(call(&mut c, "PUT", "/machine-config", put).0, 204);
        assert_eq!(
            call(&mut c, "GET", "/machine-config", "").1,
            r#"{"vcpu_count":2,"mem_size_mib":64,"pvm_guest_kernel":true}"#
        );
        assert_eq!(
            call(&mut c, "PATCH", "/machine-config", r#"{"vcpu_count": 3}"#).0,
            204
        );
        assert_eq!(c.config.cpus, 3);
        let (status, body) = call(
            &mut c,
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 0, "mem_size_mib": 64}"#,
        );
        assert_eq!(status, 400);
        assert!(body.contains("1 to 254 vCPUs"), "{body}");
        let (status, body) = call(&mut c, "PATCH", "/machine-config", r#"{"mem_size_mib": 8}"#);
        assert!(status == 400 && body.contains("too small"), "{body}");
        let (status, body) = call(&mut c, "PUT", "/machine-config", r#"{"vcpu_count": 1}"#);
        assert!(
            status == 400 && body.contains("missing field `mem_size_mib`"),
            "{body}"
        );
    }

    #[test]
    fn routing_answers_404_405_and_400() {
        let mut c = controller();
        assert_eq!(call(&mut c, "GET", "/nope", "").0, 404);
        assert_eq!(call(&mut c, "GET", "/drives/", "").0, 404);
        assert_eq!(call(&mut c, "GET", "/drives/a/b", "").0, 404);
        let request = Request {
            method: "DELETE".into(),
            target: "/machine-config".into(),
            body: vec![],
            keep_alive: true,
        };
        let response = c.handle(&request);
        assert_eq!((response.status, response.allow), (405, Some("GET, PUT, PATCH")));
        assert_eq!(call(&mut c, "PUT", "/boot-source", "").0, 400);
        let (status, body) = call(
            &mut c,
            "PUT",
            "/drives/a",
            r#"{"drive_id": "b", "path_on_host": "/", "is_read_only": true}"#,
        );
        assert!(status == 400 && body.contains("differs"), "{body}");
        let (status, body) = call(
            &mut c,
            "PUT",
            "/drives/a.b",
            r#"{"drive_id": "a.b", "path_on_host": "/", "is_read_only": true}"#,
        );
        assert!(status == 400 && body.contains("Invalid drive_id"), "{body}");
        let metrics: serde_json::Value =
            serde_json::from_str(&call(&mut c, "GET", "/metrics?x", "").1).unwrap();
        assert_eq!(
            (metrics["api_requests"].as_u64(), metrics["api_errors"].as_u64()),
            (Some(8), Some(7))
        );
    }

    #[test]
    fn nics_and_vsock_are_configured_replaced_and_checked() {
        let mut c = controller();
        let nic = |id: &str, tap: &str, mac: &str| {
            format!(r#"{{"iface_id": "{id}", "host_dev_name": "{tap}", "guest_mac": "{mac}"}}"#)
        };
        let put = |c: &mut Controller, path: &str, body: &str| call(c, "PUT", path, body);
        assert_eq!(
            put(
                &mut c,
                "/network-interfaces/eth0",
                &nic("eth0", "tap0", "52:54:00:00:00:01")
            )
            .0,
            204
        );
        assert_eq!(
            put(
                &mut c,
                "/network-interfaces/eth1",
                r#"{"iface_id": "eth1", "host_dev_name": "tap1"}"#
            )
            .0,
            204
        );
        // The same id again replaces the first NIC in its place.
        assert_eq!(
            put(
                &mut c,
                "/network-interfaces/eth0",
                &nic("eth0", "tap9", "52:54:00:00:00:09")
            )
            .0,
            204
        );
        let taps: Vec<_> = c
            .config
            .nics
            .iter()
            .map(|n| (n.tap.as_str(), n.mac.as_deref()))
            .collect();
        assert_eq!(taps, [("tap9", Some("52:54:00:00:00:09")), ("tap1", None)]);
        for (path, body, needle) in [
            (
                "/network-interfaces/eth0",
                nic("eth0", "tap0", "01:00:00:00:00:00"),
                "Invalid MAC",
            ),
            (
                "/network-interfaces/eth0",
                nic("eth0", "tap0", "52:54:00"),
                "Invalid MAC",
            ),
            (
                "/network-interfaces/eth0",
                nic("eth0", "", "52:54:00:00:00:01"),
                "not a valid interface name",
            ),
            (
                "/network-interfaces/eth0",
                nic("eth1", "tap0", "52:54:00:00:00:01"),
                "differs",
            ),
            (
                "/network-interfaces/e.0",
                nic("e.0", "tap0", "52:54:00:00:00:01"),
                "Invalid iface_id",
            ),
            (
                "/vsock",
                r#"{"guest_cid": 2, "uds_path": "/v.sock"}"#.into(),
                "guest CID 2",
            ),
            (
                "/vsock",
                r#"{"guest_cid": 3, "uds_path": ""}"#.into(),
                "path (uds_path) is empty",
            ),
            (
                "/vsock",
                r#"{"guest_cid": 3, "uds_path": "/v", "vsock_id": "v"}"#.into(),
                "unknown field `vsock_id`",
            ),
        ] {
            let (status, answer) = put(&mut c, path, &body);
            assert!(
                status == 400 && answer.contains(needle),
                "{path} {body}: {answer}"
            );
        }
        assert_eq!(c.config.nics.len(), 2);
        assert_eq!(
            put(&mut c, "/vsock", r#"{"guest_cid": 3, "uds_path": "/a"}"#).0,
            204
        );
        assert_eq!(
            put(&mut c, "/vsock", r#"{"guest_cid": 7, "uds_path": "/b"}"#).0,
            204
        );
        let vsock = c.config.vsock.clone().unwrap();
        assert_eq!((vsock.guest_cid, vsock.uds_path.to_str()), (7, Some("/b")));
        let request = Request {
            method: "GET".into(),
            target: "/vsock".into(),
            body: vec![],
            keep_alive: true,
        };
        let response = c.handle(&request);
        assert_eq!((response.status, response.allow), (405, Some("PUT")));
        assert_eq!(call(&mut c, "GET", "/network-interfaces/", "").0, 404);
    }

    #[test]
    fn wrong_state_requests_are_conflicts() {
        let mut c = controller();
        assert_eq!(call(&mut c, "PATCH", "/vm", r#"{"state": "Paused"}"#).0, 409);
        let (status, body) = call(&mut c, "PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
        assert!(status == 400 && body.contains("No boot source"), "{body}");
        let (status, body) = call(
            &mut c,
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path": "/nonexistent/k"}"#,
        );
        assert!(status == 400 && body.contains("does not exist"), "{body}");
        let (_, info) = call(&mut c, "GET", "/", "");
        assert!(info.contains(r#""state":"Not started""#), "{info}");
        let press = r#"{"action_type": "PressPowerButton"}"#;
        let (status, body) = call(&mut c, "PUT", "/actions", press);
        assert!(status == 409 && body.contains("not running"), "{body}");
        c.exit.set(VmExit::PowerOff).unwrap();
        assert_eq!(
            call(
                &mut c,
                "PUT",
                "/machine-config",
                r#"{"vcpu_count": 1, "mem_size_mib": 32}"#
            )
            .0,
            409
        );
        let (status, body) = call(&mut c, "PUT", "/actions", press);
        assert!(status == 409 && body.contains("Exited"), "{body}");
    }
}
