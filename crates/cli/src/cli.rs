//! The command line of `vessel`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "vessel", version, about = "vessel: isolated compute from OCI images")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The image store on this host that save, load, import and unpack use (vesseld's --root).
    #[arg(long, global = true, default_value = "/var/lib/vessel")]
    pub root: PathBuf,
    /// The vesseld to talk to: a unix socket path or unix://PATH.
    #[arg(
        short = 'H',
        long,
        global = true,
        env = "VESSEL_HOST",
        default_value = "unix:///run/vessel/vessel.sock"
    )]
    pub host: String,
    /// For a tcp:// host: the CA of vesseld's certificate (PEM).
    #[arg(long = "tls-ca", global = true, env = "VESSEL_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// For a tcp:// host: a client certificate (PEM), with --tls-key.
    #[arg(long = "tls-cert", global = true, env = "VESSEL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long = "tls-key", global = true, env = "VESSEL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// For a tcp:// host: a bearer token vesseld accepts.
    #[arg(long, global = true, env = "VESSEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output: table (human), json, or a template such as '{{.Name}} {{.Status}}' (ps, images, inspect).
    #[arg(long, global = true, default_value = "table")]
    pub format: String,
}

impl Global {
    pub fn json(&self) -> bool {
        self.format == "json"
    }
}

/// How an instance is made: `run` and `create`.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Instance name (default: a generated one).
    #[arg(long)]
    pub name: Option<String>,
    /// Keep stdin open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables (KEY=VALUE, or KEY to pass ours).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Labels (KEY=VALUE).
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// Restart policy: no, always, unless-stopped, on-failure[:N].
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Remove the instance when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Pull the image first: missing (when not in the store), always, never.
    #[arg(long, default_value = "missing", value_parser = ["missing", "always", "never"])]
    pub pull: String,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// User (name or uid) and optional group: USER[:GROUP].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the instance.
    #[arg(short, long)]
    pub workdir: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Process limits: NAME=SOFT[:HARD], e.g. nofile=1024:2048.
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// A tmpfs mount: PATH[:OPTIONS].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// A bind mount from the host: HOST_PATH:CONTAINER_PATH[:ro].
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Network: none (loopback only), host, or network names, comma-separated (default: vessel0).
    #[arg(long)]
    pub network: Option<String>,
    /// Forward a host port: [HOST_IP:]HOST_PORT[-END]:PORT[-END][/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// A static IPv4 address on the (first) network.
    #[arg(long)]
    pub ip: Option<String>,
    /// A static IPv6 address on the (first) network.
    #[arg(long)]
    pub ip6: Option<String>,
    /// A static MAC address on the (first) network.
    #[arg(long = "mac-address")]
    pub mac_address: Option<String>,
    /// More names for the instance on its networks' DNS.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// A resolver for the instance's resolv.conf (instead of its network's).
    #[arg(long)]
    pub dns: Vec<String>,
    /// Bandwidth limit of each interface, each way: bits per second, with k, m or g (e.g. 100m).
    #[arg(long = "net-rate")]
    pub net_rate: Option<String>,
    /// User namespace: host, or auto (its own subordinate ids: root inside is unprivileged on the host).
    #[arg(long, value_parser = ["host", "auto"])]
    pub userns: Option<String>,
    /// Run a reaper (tini) as PID 1 that starts the command, passes signals on and reaps orphans.
    #[arg(long)]
    pub init: bool,
    /// Signal that stop sends first (default SIGTERM).
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds stop waits before SIGKILL.
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u32>,
    #[command(flatten)]
    pub vm: VmArgs,
    /// The image (none for a VM that boots its own --kernel).
    #[arg(required_unless_present = "kernel")]
    pub image: Option<String>,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// A microVM instance instead of a container. Paths are on vesseld's host; relative ones are taken from
/// the current directory.
#[derive(Args, Debug, Clone, Default)]
pub struct VmArgs {
    /// Run a microVM (kind vm) instead of a container.
    #[arg(long)]
    pub vm: bool,
    /// The VM's kernel (bzImage or ELF vmlinux). Without an image, a VM that boots its own OS; with one,
    /// instead of vessel's guest kernel.
    #[arg(long, requires = "vm")]
    pub kernel: Option<String>,
    /// The VM's initramfs.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<String>,
    /// A raw disk image as a virtio-blk device, PATH[,ro] (repeatable, in order).
    #[arg(long, requires = "kernel")]
    pub disk: Vec<String>,
    /// The kernel's command line (default: console=ttyS0 panic=-1, plus ip= for the first network).
    #[arg(long = "kernel-args", requires = "kernel")]
    pub kernel_args: Option<String>,
    /// The kernel is built as a PVM guest (what boots where /dev/kvm is kvm-pvm).
    #[arg(long = "pvm-guest-kernel", requires = "kernel")]
    pub pvm_guest_kernel: bool,
    /// A VM made from an image: the size of its own writable disk (bytes, or with k, m, g; default 1g).
    #[arg(long = "disk-size", requires = "vm")]
    pub disk_size: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the instance's id.
    #[arg(short, long)]
    pub detach: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    pub instance: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (or all).
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    /// Only lines since a time (RFC 3339) or a duration ago (10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Show each line's time.
    #[arg(short, long)]
    pub timestamps: bool,
    pub instance: String,
}

/// Resource limits: `run`, `create` and `update`.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Memory limit, e.g. 64m or 1g.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap).
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU limit as a number of CPUs, e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Relative CPU weight (2..262144; 1024 is the default share).
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPUs the instance may use, e.g. 0-1.
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block I/O weight (10..1000).
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// Read rate from a disk, DEVICE:RATE (e.g. /dev/vda:10mb); repeatable.
    #[arg(long = "device-read-bps")]
    pub device_read_bps: Vec<String>,
    /// Write rate to a disk, DEVICE:RATE; repeatable.
    #[arg(long = "device-write-bps")]
    pub device_write_bps: Vec<String>,
    /// Read operations per second from a disk, DEVICE:N; repeatable.
    #[arg(long = "device-read-iops")]
    pub device_read_iops: Vec<String>,
    /// Write operations per second to a disk, DEVICE:N; repeatable.
    #[arg(long = "device-write-iops")]
    pub device_write_iops: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub limits: LimitArgs,
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true)]
    pub instances: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create and start an instance from an image (in the foreground unless -d).
    Run(RunArgs),
    /// Create an instance without starting it.
    Create(CreateArgs),
    /// Start instances.
    Start {
        /// Attach to its output and wait for it (one instance).
        #[arg(short, long)]
        attach: bool,
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Stop instances: their stop signal, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short, long)]
        time: Option<u32>,
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Stop and start instances.
    Restart {
        #[arg(short, long)]
        time: Option<u32>,
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Send a signal to instances (default SIGKILL).
    Kill {
        #[arg(short, long)]
        signal: Option<String>,
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Freeze every process of instances.
    Pause {
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Thaw paused instances.
    Unpause {
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Remove instances.
    Rm {
        /// Also running ones (killed first).
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// List instances.
    Ps {
        /// Also those not running.
        #[arg(short, long)]
        all: bool,
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
        /// label=KEY[=VALUE], status=S, name=N, id=PREFIX, kind=K (repeatable; all must match).
        #[arg(short, long)]
        filter: Vec<String>,
    },
    /// Show instances as JSON (or through --format).
    Inspect {
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Run a command in a running instance.
    Exec(ExecArgs),
    /// An instance's output.
    Logs(LogsArgs),
    /// Resource use of running instances.
    Stats {
        /// One sample, then exit.
        #[arg(long = "no-stream")]
        no_stream: bool,
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// An instance's processes.
    Top { instance: String },
    /// Wait for instances to stop; print their exit codes.
    Wait {
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Rename an instance.
    Rename { instance: String, name: String },
    /// Change limits or the restart policy of instances, live.
    Update(UpdateArgs),
    /// Lifecycle events as they happen.
    Events,
    /// The daemon.
    Info,
    /// Versions of this client and of the daemon.
    Version,
    /// Run vesseld in the foreground (arguments go to vesseld).
    Daemon {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Pull an image from a registry.
    Pull {
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push an image to a registry.
    Push {
        image: String,
        /// Where to push (default: the image's own name).
        destination: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List images.
    Images,
    /// Give an image another name.
    Tag(TagArgs),
    /// Write images to an archive (docker save format).
    Save(SaveArgs),
    /// Load images from an archive (docker save or OCI archive).
    Load(LoadArgs),
    /// Remove images.
    Rmi {
        /// Also an image instances were made from (they keep it).
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// vesseld's asynchronous operations (pulls, pushes, creates that pull).
    #[command(subcommand)]
    Operation(OperationCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// List an instance's port forwards.
    Port { instance: String },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network.
    Create(NetworkCreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks (refused while an instance is on one).
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Put an instance on a network (at once when it runs).
    Connect {
        network: String,
        instance: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        ip6: Option<String>,
        #[arg(long = "mac-address")]
        mac_address: Option<String>,
        #[arg(long)]
        alias: Vec<String>,
    },
    /// Take an instance off a network.
    Disconnect { network: String, instance: String },
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    pub name: String,
    /// bridge (default) or macvlan.
    #[arg(short, long)]
    pub driver: Option<String>,
    /// IPv4 subnet, e.g. 10.20.0.0/24 (default: a free /24 of 10.77.0.0/16).
    #[arg(long)]
    pub subnet: Option<String>,
    #[arg(long)]
    pub gateway: Option<String>,
    /// Also IPv6 (a unique local /64 unless --subnet6 gives one).
    #[arg(long)]
    pub ipv6: bool,
    #[arg(long)]
    pub subnet6: Option<String>,
    #[arg(long)]
    pub gateway6: Option<String>,
    /// No egress and no port forwards: instances reach only each other.
    #[arg(long)]
    pub internal: bool,
    #[arg(long)]
    pub mtu: Option<u32>,
    /// macvlan: the host interface to cut the network from.
    #[arg(long)]
    pub parent: Option<String>,
    /// macvlan: an 802.1Q VLAN id on the parent.
    #[arg(long)]
    pub vlan: Option<u16>,
    /// Labels (KEY=VALUE).
    #[arg(short, long = "label")]
    pub label: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum OperationCommand {
    /// List operations (running, and ended in the last minutes).
    #[command(alias = "list")]
    Ls,
    /// Show one as JSON.
    Show { id: String },
    /// Wait until it ends, with its progress.
    Wait { id: String },
    /// Cancel a running one.
    Cancel { id: String },
}

/// How to reach a registry (`pull`, `push`).
#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Plain HTTP, or HTTPS without certificate verification.
    #[arg(long)]
    pub insecure: bool,
    /// CA certificate (PEM) to trust for the registry's TLS.
    #[arg(long = "ca-file")]
    pub ca_file: Option<PathBuf>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
}

/// `tag` and `image tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    pub image: String,
    pub name: String,
}

/// `save` and `image save`.
#[derive(Args, Debug)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `load` and `image load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    #[arg(short, long)]
    pub input: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Show images' manifests and configs as JSON.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove images.
    Rm {
        /// Also an image instances were made from (they keep it).
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove blobs and unpacked layers no image uses.
    Prune,
    /// Unpack an image's layers now (they are otherwise unpacked on first run).
    Unpack {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Give an image another name.
    Tag(TagArgs),
    /// Write images to an archive (docker save format).
    Save(SaveArgs),
    /// Load images from an archive (docker save or OCI archive).
    Load(LoadArgs),
    /// Make an image from a root filesystem directory or tarball.
    Import {
        source: PathBuf,
        name: String,
        /// Image config: CMD ["..."], ENTRYPOINT ["..."], ENV K=V, WORKDIR /d, USER u (Dockerfile syntax).
        #[arg(short, long)]
        change: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
