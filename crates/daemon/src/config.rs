//! Where one vesseld keeps everything: all paths, the cgroup parent and (later) its bridges and nftables
//! tables derive from its root, run directory and name, so two daemons side by side never touch each
//! other's instances.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Persistent state: the store, the image store, each instance's files.
    pub root: PathBuf,
    /// Runtime state (gone after a reboot): the API socket, pid file, supervisors' sockets, the runtime's
    /// state directory.
    pub run_dir: PathBuf,
    /// Names the cgroup parent (`/<name>`) and what else must be unique per daemon on a host.
    pub name: String,
    /// The supervisor binary (default: `vessel-supervisor` beside our own executable).
    pub supervisor: PathBuf,
    /// The VMM binary VM instances run under (default: `vessel-vmm` beside our own executable).
    pub vmm: PathBuf,
    /// The guest agent put into VMs made from images, a static executable (default: `vessel-agent` beside
    /// our own executable).
    pub agent: PathBuf,
    /// How long a VM made from an image may take to boot to its agent, in seconds.
    pub vm_boot_timeout: u64,
    /// Log bound per instance: bytes per file and number of files.
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Registries pulled from and pushed to over plain HTTP (or unverified TLS), besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// An instance's user namespace when its config names none: "host" or "auto".
    pub userns_default: String,
    /// Where networks' resolvers send names they do not own (default: /etc/resolv.conf's nameservers).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// The port networks' resolvers listen on (53; another only in tests).
    pub dns_port: u16,
}

/// The part of an instance id that names its files in the supervisors' directory.
pub fn short_id(id: &str) -> &str {
    &id[..16.min(id.len())]
}

impl DaemonConfig {
    pub fn new(root: PathBuf, run_dir: PathBuf, name: String) -> DaemonConfig {
        let beside_us = |name: &str| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join(name)))
                .unwrap_or_else(|| PathBuf::from(name))
        };
        let supervisor = beside_us("vessel-supervisor");
        let vmm = beside_us("vessel-vmm");
        let agent = beside_us("vessel-agent");
        DaemonConfig {
            root,
            run_dir,
            name,
            supervisor,
            vmm,
            agent,
            vm_boot_timeout: 60,
            log_max_size: 10 << 20,
            log_max_files: 3,
            insecure_registries: Vec::new(),
            userns_default: "auto".into(),
            dns_upstreams: Vec::new(),
            dns_port: 53,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("vessel.sock")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("vesseld.pid")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("vesseld.lock")
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("vesseld.db")
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.run_dir.join("runtime")
    }

    /// An instance's persistent files: bundle (config.json, rootfs, upper, work), log, exit record.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.root.join("instances").join(id)
    }

    pub fn instances_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    pub fn supervisors_dir(&self) -> PathBuf {
        self.run_dir.join("sup")
    }

    /// A running instance's attach socket. Named by the id's first 16 hex digits (64 bits, unique in
    /// practice): a unix socket path has at most 107 bytes, and run directories can be long.
    pub fn attach_socket(&self, id: &str) -> PathBuf {
        self.supervisors_dir().join(format!("{}.sock", short_id(id)))
    }

    pub fn supervisor_pid_file(&self, id: &str) -> PathBuf {
        self.supervisors_dir().join(format!("{}.pid", short_id(id)))
    }

    /// Guest kernels unpacked from their packages, with the initramfs vessel made for each.
    pub fn kernels_dir(&self) -> PathBuf {
        self.root.join("kernels")
    }

    /// Images' read-only disks, one per image, shared by the VMs made from it.
    pub fn vm_disks_dir(&self) -> PathBuf {
        self.root.join("vm-disks")
    }

    /// A running VM instance's vsock socket (host side; the agent's sessions go through it).
    pub fn vsock_socket(&self, id: &str) -> PathBuf {
        self.supervisors_dir().join(format!("{}.vsock", short_id(id)))
    }

    /// A running VM instance's VMM API socket.
    pub fn vmm_socket(&self, id: &str) -> PathBuf {
        self.supervisors_dir().join(format!("{}.vmm", short_id(id)))
    }

    pub fn exit_file(&self, id: &str) -> PathBuf {
        self.instance_dir(id).join("exit.json")
    }

    pub fn log_file(&self, id: &str) -> PathBuf {
        self.instance_dir(id).join("container.log")
    }

    /// The cgroup every instance's cgroup is made under.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.name)
    }

    pub fn cgroup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent())
    }

    pub fn image_root(&self) -> &Path {
        &self.root
    }
}
