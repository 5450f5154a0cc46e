//! The instance manager: the verbs of vesseld over the store, the image store, the runtime library and the
//! supervisors. The API handlers call it; nothing else writes the store.
//!
//! Consistency: every change of an instance is first written to the store (a transitional status such as
//! `creating`, `starting` or `deleting` when host work follows), then done on the host, then recorded; a
//! crash at any point leaves a record that [`reconcile`] finishes or undoes at the next start.

pub mod bundle;
mod error;
mod idmap;
mod images;
mod lifecycle;
mod names;
pub mod networks;
mod plumbing;
pub mod reconcile;
mod stats;
mod streams;
mod supervise;
mod vm;
mod vm_image;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, oneshot, watch as tokio_watch};
use vessel_api::{Event, Instance, InstanceConfig, InstanceState, Kind, Status};
use vessel_image::snapshot::Snapshot;

pub use error::ManagerError;
pub use images::{parse_reference, validate_pull};
pub use names::random_id;
pub use streams::{ExecSession, LogQuery};

use crate::config::DaemonConfig;
use crate::store::{InstanceStore, Record, StoreError, SupervisorRef};

/// What vesseld holds in memory about one instance (nothing that must survive a restart).
#[derive(Default)]
struct Live {
    /// Serializes the verbs on one instance (start, stop, delete, ...).
    verb: tokio::sync::Mutex<()>,
    /// Bumped whenever the instance's process exits; `wait` and `stop` watch it.
    exits: Mutex<Option<tokio_watch::Sender<u64>>>,
    /// Clients attached before the instance started: each gets a connection to the supervisor at start.
    pending_attaches: Mutex<Vec<oneshot::Sender<Result<tokio::net::UnixStream, String>>>>,
    /// The terminal size a pending attach asked for (rows, columns), for the next start.
    pending_size: Mutex<Option<(u16, u16)>>,
    /// The restart policy's back-off step (reset after a run of 10 s or more).
    backoff: Mutex<u32>,
}

impl Live {
    fn exit_watch(&self) -> tokio_watch::Receiver<u64> {
        let mut g = self.exits.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert_with(|| tokio_watch::channel(0).0).subscribe()
    }

    fn notify_exit(&self) {
        let mut g = self.exits.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert_with(|| tokio_watch::channel(0).0)
            .send_modify(|n| *n += 1);
    }
}

pub struct Manager {
    pub cfg: DaemonConfig,
    store: Arc<dyn InstanceStore>,
    events: broadcast::Sender<Event>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Read-modify-write of an instance's state is done under this lock (never held across an await).
    state_write: Mutex<()>,
    /// Verbs and reconciliation are serialized against the image store's own writers by its lock; this one
    /// keeps our own creates from unpacking the same image twice at once.
    image_lock: tokio::sync::Mutex<()>,
    /// Pulls, pushes, creates that pull, asynchronous deletes.
    pub ops: crate::operations::Operations,
    /// Serializes network creates and deletes (the default network is made once).
    net_lock: tokio::sync::Mutex<()>,
    /// Serializes rebuilds of the nftables table.
    firewall_lock: tokio::sync::Mutex<()>,
    /// Each bridge network's DNS resolver, by network id.
    net_runtimes: Mutex<HashMap<String, networks::NetworkRuntime>>,
}

/// What `POST /1.0/instances` did: made the instance, or started an operation that pulls its image first.
pub enum Created {
    Now(Box<Instance>),
    Later(Box<vessel_api::Operation>),
}

/// When a create pulls its image: `missing` (the default), `always`, `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    #[default]
    Missing,
    Always,
    Never,
}

impl Manager {
    pub fn new(cfg: DaemonConfig, store: Arc<dyn InstanceStore>) -> Arc<Manager> {
        Arc::new(Manager {
            cfg,
            store,
            events: broadcast::channel(1024).0,
            live: Mutex::new(HashMap::new()),
            state_write: Mutex::new(()),
            image_lock: tokio::sync::Mutex::new(()),
            ops: Default::default(),
            net_lock: tokio::sync::Mutex::new(()),
            firewall_lock: tokio::sync::Mutex::new(()),
            net_runtimes: Mutex::new(HashMap::new()),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, action: &str, inst: &Instance, exit_code: Option<i32>) {
        let _ = self.events.send(Event {
            time: vessel_runtime::clock::now_rfc3339(),
            action: action.into(),
            id: inst.id.clone(),
            name: inst.name.clone(),
            exit_code,
        });
    }

    fn live(&self, id: &str) -> Arc<Live> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn forget(&self, id: &str) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    pub fn find(&self, name_or_id: &str) -> Result<Record, ManagerError> {
        Ok(self.store.find(name_or_id)?)
    }

    pub fn list(&self) -> Result<Vec<Instance>, ManagerError> {
        self.all_with_networks(self.store.list()?.into_iter().map(|r| r.instance).collect())
    }

    /// Change an instance's recorded state in one transaction; returns the new record.
    fn update_state(
        &self,
        id: &str,
        f: impl FnOnce(&mut InstanceState, &mut Option<SupervisorRef>),
    ) -> Result<Record, ManagerError> {
        let _g = self.state_write.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = self.store.get(id)?;
        f(&mut r.instance.state, &mut r.supervisor);
        self.store.set_state(id, &r.instance.state, r.supervisor)?;
        Ok(r)
    }

    pub fn runtime(&self) -> vessel_runtime::container::Runtime {
        vessel_runtime::container::Runtime::new(self.cfg.runtime_root(), false)
    }

    pub fn image_store(&self) -> Result<vessel_image::store::Store, ManagerError> {
        vessel_image::store::Store::open(self.cfg.image_root())
            .map_err(|e| ManagerError::Internal(format!("Cannot open the image store: {e}")))
    }

    /// `POST /1.0/instances`: at once when the image is in the store, else as an operation that pulls it
    /// first (unless `pull` is never).
    pub async fn create(
        self: &Arc<Self>,
        mut config: InstanceConfig,
        pull: PullPolicy,
    ) -> Result<Created, ManagerError> {
        validate_create(&mut config)?;
        if config.kind == Kind::Vm && config.image.is_empty() {
            // A raw VM boots its own kernel: no image to find or pull.
            let mgr = self.clone();
            let made = tokio::spawn(async move { mgr.create_from(config, None).await })
                .await
                .map_err(|e| ManagerError::Internal(e.to_string()))??;
            return Ok(Created::Now(Box::new(made)));
        }
        let found = self.image_store()?.find(&config.image);
        let needs_pull = match (&found, pull) {
            (_, PullPolicy::Always) => true,
            (Ok(_), _) => false,
            (Err(vessel_image::store::StoreError::NotFound(_)), PullPolicy::Missing) => true,
            (Err(vessel_image::store::StoreError::NotFound(_)), PullPolicy::Never) => {
                return Err(ManagerError::NotFound(format!(
                    "Image {} is not in the image store: pull or import it first",
                    config.image
                )))
            }
            (Err(_), _) => return Err(found.map(|_| ()).map_err(images::store_error).unwrap_err()),
        };
        if !needs_pull {
            let image = found.map_err(images::store_error)?;
            // Its own task: a client that hangs up does not stop a create half way.
            let mgr = self.clone();
            let made = tokio::spawn(async move { mgr.create_from(config, Some(image)).await })
                .await
                .map_err(|e| ManagerError::Internal(e.to_string()))??;
            return Ok(Created::Now(Box::new(made)));
        }
        let reference = images::parse_reference(&config.image)?;
        if let Some(n) = &config.name {
            if self.find(n).is_ok() {
                return Err(ManagerError::Conflict(format!(
                    "The name {n:?} is already in use by another instance"
                )));
            }
        }
        let opts = self.registry_options(&reference.registry, &Default::default())?;
        let mgr = self.clone();
        let resources = config
            .name
            .iter()
            .map(|n| format!("/1.0/instances/{n}"))
            .collect();
        Ok(Created::Later(Box::new(self.ops.start(
            "create",
            format!("Pulling {reference}, then creating the instance"),
            resources,
            move |h| async move {
                let image = mgr.pull_now(&reference, opts, h.clone()).await?;
                h.no_more_cancel()?;
                h.stage("Creating the instance");
                let inst = mgr.create_from(config, Some(image)).await?;
                Ok(Some(serde_json::to_value(inst).unwrap_or_default()))
            },
        ))))
    }

    /// Make the instance from an image in the store (none for a raw VM).
    async fn create_from(
        self: &Arc<Self>,
        config: InstanceConfig,
        image: Option<vessel_image::store::ImageRecord>,
    ) -> Result<Instance, ManagerError> {
        let (image_name, image_id) = image
            .as_ref()
            .map(|i| (i.name.clone(), i.config.to_string()))
            .unwrap_or_default();
        let userns_auto = config.kind == Kind::Container
            && config.userns.as_deref().unwrap_or(&self.cfg.userns_default) == "auto";
        let id = names::random_id()?;
        // Held until the instance is made: a delete (or any verb) waits for it instead of racing its mount.
        let live = self.live(&id);
        let _verb = live.verb.lock().await;
        let name = match config.name.clone() {
            Some(n) => n,
            None => names::generate(&id),
        };
        let instance = Instance {
            id: id.clone(),
            name,
            kind: config.kind,
            image: image_name,
            image_id,
            created_at: vessel_runtime::clock::now_rfc3339(),
            config,
            state: InstanceState {
                status: Status::Creating,
                pid: None,
                exit_code: None,
                oom_killed: false,
                started_at: None,
                finished_at: None,
                restart_count: 0,
                stopped_by_user: false,
                idmap: None,
            },
            networks: Vec::new(),
        };
        let mut instance = instance;
        // The networks it joins exist before its row does (the default one is made on first use).
        let mut joins = Vec::new();
        if instance.config.network_mode.is_none() {
            let requests = if instance.config.networks.is_empty() {
                vec![vessel_api::NetworkRequest {
                    network: networks::DEFAULT_NETWORK.into(),
                    ..Default::default()
                }]
            } else {
                instance.config.networks.clone()
            };
            for req in requests {
                let net = if req.network == networks::DEFAULT_NETWORK {
                    self.default_network().await
                } else {
                    self.store.network(&req.network).map_err(|e| match e {
                        StoreError::NotFound(_) => {
                            ManagerError::NotFound(format!("No such network: {}", req.network))
                        }
                        e => e.into(),
                    })
                };
                let net = match net {
                    Ok(n) => n,
                    Err(e) => {
                        self.forget(&id);
                        return Err(e);
                    }
                };
                joins.push((net.id, req));
            }
        }
        let inserted = (|| {
            // Allocation and insert under one lock: two creates never get the same id block.
            let _g = self.state_write.lock().unwrap_or_else(|p| p.into_inner());
            if userns_auto {
                let used: Vec<vessel_api::IdMap> = self
                    .store
                    .list()?
                    .iter()
                    .filter_map(|r| r.instance.state.idmap)
                    .collect();
                instance.state.idmap = Some(idmap::allocate(&used)?);
            }
            self.check_ports(&instance)?;
            self.store
                .insert(&Record {
                    instance: instance.clone(),
                    supervisor: None,
                })
                .map_err(|e| match e {
                    StoreError::NameTaken(n) => ManagerError::Conflict(format!(
                        "The name {n:?} is already in use by another instance"
                    )),
                    e => e.into(),
                })?;
            // Addresses are chosen and recorded in the attachment's transaction; a failure takes the row
            // (and so every attachment made) away again.
            for (net_id, req) in &joins {
                if let Err(e) = self.store.attach(&id, net_id, req) {
                    let _ = self.store.delete(&id);
                    return Err(e.into());
                }
            }
            Ok(())
        })();
        if let Err(e) = inserted {
            self.forget(&id);
            return Err(e);
        }
        let prepared = {
            let _g = self.image_lock.lock().await;
            let mgr = self.clone();
            let inst = instance.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(image) = &image {
                    mgr.hold_image(&inst.id, image)?;
                }
                mgr.prepare_files(&inst)
            })
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))?
        };
        if let Err(e) = prepared {
            let mgr = self.clone();
            let id2 = id.clone();
            let _ = tokio::task::spawn_blocking(move || mgr.remove_files(&id2)).await;
            let _ = self.store.delete(&id);
            self.forget(&id);
            return Err(e);
        }
        if let Err(e) = self.after_attachments_changed().await {
            let mgr = self.clone();
            let id2 = id.clone();
            let _ = tokio::task::spawn_blocking(move || mgr.remove_files(&id2)).await;
            let _ = self.store.delete(&id);
            self.forget(&id);
            let _ = self.after_attachments_changed().await;
            return Err(e);
        }
        let r = self.update_state(&id, |s, _| s.status = Status::Created)?;
        self.emit("created", &r.instance, None);
        Ok(self.with_networks(r.instance))
    }

    /// The instance's root filesystem and config.json (made again at every start, as limits may change).
    fn prepare_files(&self, inst: &Instance) -> Result<(), ManagerError> {
        if vm::is_vm(inst) {
            return self.prepare_vm(inst).map(|_| ());
        }
        let dir = self.cfg.instance_dir(&inst.id);
        let store = self.image_store()?;
        let image = self
            .held_image(&store, &inst.id, &inst.image_id)
            .map_err(|e| ManagerError::Internal(format!("Image {} of {}: {e}", inst.image, inst.name)))?;
        let snapshot = Snapshot::at(&dir);
        let rootfs = if snapshot.is_mounted() {
            snapshot.rootfs.clone()
        } else {
            let lowers = store
                .layer_dirs(&image)
                .map_err(|e| ManagerError::Internal(format!("Image {}: {e}", inst.image)))?;
            match &inst.state.idmap {
                Some(m) => {
                    let userns = idmap::user_namespace(m)?;
                    vessel_image::snapshot::mount_snapshot_idmapped(
                        &lowers,
                        &dir,
                        std::os::fd::AsFd::as_fd(&userns),
                        (m.uid, m.gid),
                    )
                }
                None => vessel_image::snapshot::mount_snapshot(&lowers, &dir),
            }
            .map_err(|e| ManagerError::Internal(e.to_string()))?
            .rootfs
        };
        let image_config = store
            .config(&image)
            .map_err(|e| ManagerError::Internal(format!("Image {}: {e}", inst.image)))?;
        let hostname = bundle::hostname(&inst.config, &inst.id);
        let net = bundle::NetSetup {
            netns: (inst.config.network_mode.as_deref() != Some("host")).then(|| self.netns_path(&inst.id)),
            files: self.write_net_files(inst, &hostname)?,
        };
        let spec = bundle::runtime_config(
            &inst.config,
            &inst.id,
            &inst.name,
            &image_config,
            &rootfs,
            &self.cfg.cgroup_path(&inst.id),
            inst.state.idmap,
            &net,
        )?;
        let path = dir.join("config.json");
        crate::supervisor::write_atomic(&path, &serde_json::to_vec_pretty(&spec).unwrap_or_default())
            .map_err(|e| ManagerError::Internal(format!("Cannot write {}: {e}", path.display())))
    }

    /// Unmount the instance's root filesystem, keeping its changes.
    fn unmount(&self, id: &str) {
        let rootfs = self.cfg.instance_dir(id).join("rootfs");
        if Snapshot::at(&self.cfg.instance_dir(id)).is_mounted()
            && nix::mount::umount2(&rootfs, nix::mount::MntFlags::empty()).is_err()
        {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// Everything an instance has on the host: its container (killed), cgroup, mounts, files.
    fn remove_files(&self, id: &str) -> Result<(), ManagerError> {
        let _ = vessel_runtime::container::delete(&self.runtime(), id, true);
        self.remove_cgroup(id);
        self.unplumb_all(id)?;
        let dir = self.cfg.instance_dir(id);
        Snapshot::at(&dir)
            .remove()
            .map_err(|e| ManagerError::Internal(e.to_string()))?;
        let _ = std::fs::remove_file(self.cfg.attach_socket(id));
        self.remove_vm_sockets(id);
        if let Ok(store) = self.image_store() {
            store
                .release(&images::holder(id))
                .map_err(|e| ManagerError::Internal(format!("Cannot release the image of {id}: {e}")))?;
        }
        // Never delete through a mount (a shared image layer could be behind it).
        if let Some(m) = vessel_image::snapshot::mounts_under(&dir).first() {
            return Err(ManagerError::Internal(format!(
                "Cannot remove {}: {} is still mounted",
                dir.display(),
                m.display()
            )));
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ManagerError::Internal(format!(
                "Cannot remove {}: {e}",
                dir.display()
            ))),
        }
    }

    /// The instance's cgroup, if something left it (its processes killed first).
    fn remove_cgroup(&self, id: &str) {
        let path = self.cfg.cgroup_path(id);
        if let Ok(cg) = vessel_runtime::cgroups::Cgroup::resolve(Some(std::path::Path::new(&path)), id, false)
        {
            for pid in cg.pids().unwrap_or_default() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            for _ in 0..50 {
                if cg.dirs().iter().all(|d| !d.path.exists()) || cg.destroy().is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// `DELETE /1.0/instances/NAME`, in a task of its own: a client that hangs up does not stop it half way.
    pub async fn delete(self: &Arc<Self>, name_or_id: &str, force: bool) -> Result<(), ManagerError> {
        let mgr = self.clone();
        let name_or_id = name_or_id.to_string();
        tokio::spawn(async move { mgr.delete_locked(&name_or_id, force).await })
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))?
    }

    async fn delete_locked(self: &Arc<Self>, name_or_id: &str, force: bool) -> Result<(), ManagerError> {
        let id = self.find(name_or_id)?.instance.id;
        let live = self.live(&id);
        let _g = live.verb.lock().await;
        let r = self.store.get(&id)?;
        if r.instance.state.status.is_active() {
            if !force {
                return Err(ManagerError::Conflict(format!(
                    "Instance {} is {}: stop it first or delete with force",
                    r.instance.name, r.instance.state.status
                )));
            }
            self.kill_and_wait(&r, std::time::Duration::from_secs(10)).await?;
        }
        self.delete_now(&id).await
    }

    /// Delete a stopped instance (the verb lock held by the caller).
    async fn delete_now(self: &Arc<Self>, id: &str) -> Result<(), ManagerError> {
        let r = self.update_state(id, |s, _| s.status = Status::Deleting)?;
        let mgr = self.clone();
        let id2 = id.to_string();
        tokio::task::spawn_blocking(move || mgr.remove_files(&id2))
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))??;
        self.store.delete(id)?;
        self.after_attachments_changed().await?;
        self.emit("deleted", &r.instance, None);
        if let Some(l) = self.live.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            l.notify_exit();
        }
        self.forget(id);
        Ok(())
    }

    /// `POST /1.0/instances/NAME/rename`.
    pub fn rename(&self, name_or_id: &str, new_name: &str) -> Result<Instance, ManagerError> {
        names::validate(new_name)?;
        let id = self.find(name_or_id)?.instance.id;
        self.store.rename(&id, new_name).map_err(|e| match e {
            StoreError::NameTaken(n) => {
                ManagerError::Conflict(format!("The name {n:?} is already in use by another instance"))
            }
            e => e.into(),
        })?;
        let r = self.store.get(&id)?;
        self.refresh_zones()?;
        self.emit("renamed", &r.instance, None);
        Ok(r.instance)
    }

    /// `POST /1.0/instances/NAME/wait`: until the instance is not running; its exit code.
    pub async fn wait(&self, name_or_id: &str) -> Result<Option<i32>, ManagerError> {
        let id = self.find(name_or_id)?.instance.id;
        let mut rx = self.live(&id).exit_watch();
        loop {
            let r = match self.store.get(&id) {
                Ok(r) => r,
                // Deleted while we waited (--rm): it has exited.
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if !r.instance.state.status.is_active() {
                return Ok(r.instance.state.exit_code);
            }
            if rx.changed().await.is_err() {
                return Ok(None);
            }
        }
    }

    /// `PATCH /1.0/instances/NAME`: limits (applied live when running) and the restart policy.
    pub async fn update(
        &self,
        name_or_id: &str,
        upd: vessel_api::InstanceUpdate,
    ) -> Result<Instance, ManagerError> {
        let id = self.find(name_or_id)?.instance.id;
        let live = self.live(&id);
        let _g = live.verb.lock().await;
        let mut r = self.store.get(&id)?;
        let mut config = r.instance.config.clone();
        if let Some(l) = &upd.limits {
            merge_limits(&mut config.limits, l);
            if r.instance.kind == Kind::Vm {
                if r.instance.state.status.is_active() {
                    return Err(ManagerError::Conflict(format!(
                        "Instance {} is a running VM: its memory and vCPUs change when it is stopped",
                        r.instance.name
                    )));
                }
                vm::validate(&config)?;
            } else {
                bundle::validate_limits(&config.limits)?;
            }
        }
        if let Some(p) = &upd.restart {
            p.validate().map_err(ManagerError::Invalid)?;
            config.restart = p.clone();
        }
        if r.instance.state.status.is_active() {
            if let Some(l) = &upd.limits {
                let res: oci_spec::runtime::LinuxResources = serde_json::from_value(bundle::resources(l))
                    .map_err(|e| ManagerError::Invalid(format!("Invalid limits: {e}")))?;
                let rt = self.runtime();
                let id2 = id.clone();
                tokio::task::spawn_blocking(move || vessel_runtime::container::update(&rt, &id2, &res))
                    .await
                    .map_err(|e| ManagerError::Internal(e.to_string()))?
                    .map_err(|e| ManagerError::Invalid(vessel_runtime::logging::one_line(&e)))?;
            }
        }
        self.store.set_config(&id, &config)?;
        r.instance.config = config;
        self.emit("updated", &r.instance, None);
        Ok(r.instance)
    }
}

fn merge_limits(into: &mut vessel_api::Limits, from: &vessel_api::Limits) {
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { into.$f = from.$f.clone(); } )* };
    }
    take!(
        memory,
        memory_swap,
        cpus,
        cpu_shares,
        cpuset_cpus,
        pids,
        blkio_weight,
        device_read_bps,
        device_write_bps,
        device_read_iops,
        device_write_iops
    );
}

/// Names as instances may have them.
pub fn validate_name(name: &str) -> Result<(), ManagerError> {
    names::validate(name)
}

/// Everything `create` checks before it looks at the image store: the one place a create request is
/// validated (the API's fuzz target drives it too). Fills in defaults (the restart policy `no`).
pub fn validate_create(config: &mut InstanceConfig) -> Result<(), ManagerError> {
    if config.kind == Kind::Vm {
        vm::validate(config)?;
    } else {
        if config.vm.is_some() {
            return Err(ManagerError::Invalid(
                "VM settings (--kernel, --initrd, --disk) need kind vm (--vm)".into(),
            ));
        }
        bundle::validate(config)?;
    }
    config.restart.validate().map_err(ManagerError::Invalid)?;
    if config.restart.name.is_empty() {
        config.restart.name = "no".into();
    }
    if config.auto_remove && config.restart.name != "no" {
        return Err(ManagerError::Invalid(
            "auto-remove (--rm) and a restart policy cannot be combined".into(),
        ));
    }
    if let Some(n) = &config.name {
        names::validate(n)?;
    }
    validate_network_settings(config)?;
    if config.kind == Kind::Vm && config.image.is_empty() {
        return Ok(());
    }
    vessel_image::reference::Reference::parse(&config.image)
        .map(|_| ())
        .or_else(|e| {
            // An image id (or its prefix) is also a valid way to name an image.
            let hex = config.image.trim_start_matches("sha256:");
            if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                Ok(())
            } else {
                Err(ManagerError::Invalid(format!(
                    "Invalid image reference {:?}: {e}",
                    config.image
                )))
            }
        })?;
    Ok(())
}

/// The network part of a create request: mode, networks, forwards, resolvers.
fn validate_network_settings(config: &InstanceConfig) -> Result<(), ManagerError> {
    let invalid = |m: String| Err(ManagerError::Invalid(m));
    match config.network_mode.as_deref() {
        None => {}
        Some(m @ ("none" | "host")) => {
            if !config.networks.is_empty() {
                return invalid(format!("Network mode {m} cannot be combined with networks"));
            }
            if !config.ports.is_empty() {
                return invalid(format!(
                    "Network mode {m} has no port forwards: the instance's ports are {}",
                    if m == "host" { "the host's" } else { "unreachable" }
                ));
            }
        }
        Some(other) => {
            return invalid(format!(
                "Unknown network mode {other:?}: use none, host or a network name"
            ))
        }
    }
    let mut seen = std::collections::HashSet::new();
    for n in &config.networks {
        if !seen.insert(n.network.as_str()) {
            return invalid(format!("Network {} is named twice", n.network));
        }
        for a in &n.aliases {
            names::validate(a)?;
        }
        if let Some(m) = &n.mac {
            if vessel_net::ipam::parse_mac(m).is_none() {
                return invalid(format!("{m:?} is not a unicast MAC address"));
            }
        }
    }
    for p in &config.ports {
        p.validate().map_err(ManagerError::Invalid)?;
    }
    for d in &config.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return invalid(format!("--dns {d:?} is not an IP address"));
        }
    }
    if config.net_rate == Some(0) {
        return invalid("--net-rate must be more than 0".into());
    }
    Ok(())
}
