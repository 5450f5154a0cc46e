//! vesseld: the daemon that keeps vessel's instances. `vessel daemon` runs the same in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "vesseld",
    version,
    about = "vesseld: keeps vessel's instances and serves its API"
)]
struct Args {
    /// Persistent state: the store, images and instances.
    #[arg(long, default_value = "/var/lib/vessel")]
    root: PathBuf,
    /// Runtime state: the API socket (RUN_DIR/vessel.sock), pid file, supervisors' sockets.
    #[arg(long = "run-dir", default_value = "/run/vessel")]
    run_dir: PathBuf,
    /// This daemon's name on the host (its cgroup parent is /NAME).
    #[arg(long, default_value = "vessel")]
    name: String,
    /// The supervisor binary (default: vessel-supervisor beside vesseld).
    #[arg(long)]
    supervisor: Option<PathBuf>,
    /// The VMM binary of VM instances (default: vessel-vmm beside vesseld).
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// The guest agent put into VMs made from images, a static executable (default: vessel-agent beside
    /// vesseld).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Seconds a VM made from an image may take to boot to its agent before its start fails.
    #[arg(long = "vm-boot-timeout", default_value_t = 60)]
    vm_boot_timeout: u64,
    /// Largest size of one instance log file before it rotates, in bytes.
    #[arg(long = "log-max-size", default_value_t = 10 << 20)]
    log_max_size: u64,
    /// Log files kept per instance (the current one and rotated ones).
    #[arg(long = "log-max-files", default_value_t = 3)]
    log_max_files: u32,
    /// Also serve the API on TCP at ADDR (e.g. 0.0.0.0:8443): always TLS, always authenticated.
    #[arg(long = "listen-tcp", requires_all = ["tls_cert", "tls_key"])]
    listen_tcp: Option<std::net::SocketAddr>,
    /// The server's certificate chain (PEM).
    #[arg(long = "tls-cert")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long = "tls-key")]
    tls_key: Option<PathBuf>,
    /// Bearer tokens accepted from TCP clients, one per line.
    #[arg(long = "tokens-file")]
    tokens_file: Option<PathBuf>,
    /// Client certificates signed by this CA (PEM) are accepted without a token.
    #[arg(long = "tls-client-ca")]
    tls_client_ca: Option<PathBuf>,
    /// A registry (HOST[:PORT]) reached over plain HTTP or with an unverified certificate; repeatable.
    /// Registries on loopback always are.
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// User namespace of instances that do not choose: auto (each its own block of subordinate ids, root
    /// inside unprivileged outside; needs idmapped mounts on the image store's filesystem) or host.
    #[arg(long = "userns-default", default_value = "auto", value_parser = ["host", "auto"])]
    userns_default: String,
    /// A resolver (IP or IP:PORT) that networks' DNS forwards names it does not own to; repeatable.
    /// Default: the nameservers of /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_parser = parse_upstream)]
    dns_upstream: Vec<std::net::SocketAddr>,
}

fn parse_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    vessel_daemon::run_daemon(vessel_daemon::DaemonArgs {
        root: args.root,
        run_dir: args.run_dir,
        name: args.name,
        supervisor: args.supervisor,
        vmm: args.vmm,
        agent: args.agent,
        vm_boot_timeout: args.vm_boot_timeout,
        log_max_size: args.log_max_size,
        log_max_files: args.log_max_files,
        insecure_registries: args.insecure_registry,
        userns_default: args.userns_default,
        dns_upstreams: args.dns_upstream,
        tcp: args.listen_tcp.map(|addr| vessel_daemon::tls::TcpConfig {
            addr,
            cert: args.tls_cert.clone().unwrap_or_default(),
            key: args.tls_key.clone().unwrap_or_default(),
            tokens: args.tokens_file.clone(),
            client_ca: args.tls_client_ca.clone(),
        }),
    })
}
