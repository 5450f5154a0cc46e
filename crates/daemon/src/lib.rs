//! vesseld, the daemon that keeps vessel's instances (REST API, state store, reconciliation), and
//! vessel-supervisor, the small process that owns each running instance's stdio, log and exit status.

pub mod api;
pub mod config;
pub mod dns;
pub mod manager;
pub mod operations;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod vmboot;

use std::path::PathBuf;
use std::process::ExitCode;

/// What `vesseld` and `vessel daemon` take.
#[derive(Debug, Clone)]
pub struct DaemonArgs {
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub name: String,
    pub supervisor: Option<PathBuf>,
    pub vmm: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    pub vm_boot_timeout: u64,
    pub log_max_size: u64,
    pub log_max_files: u32,
    pub insecure_registries: Vec<String>,
    pub userns_default: String,
    /// Resolvers that networks' DNS forwards other names to (default: /etc/resolv.conf's).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// The API on TCP too (TLS, authenticated).
    pub tcp: Option<tls::TcpConfig>,
}

/// Run the daemon in the foreground until SIGTERM or SIGINT.
pub fn run_daemon(a: DaemonArgs) -> ExitCode {
    // Canonical paths: mountinfo names mounts by them, and the check that nothing is mounted under a
    // directory before it is removed compares against it.
    let canonical = |p: PathBuf| -> Result<PathBuf, String> {
        std::fs::create_dir_all(&p)
            .and_then(|_| std::fs::canonicalize(&p))
            .map_err(|e| format!("vesseld: cannot use {}: {e}", p.display()))
    };
    let (root, run_dir) = match (canonical(a.root), canonical(a.run_dir)) {
        (Ok(r), Ok(d)) => (r, d),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let mut cfg = config::DaemonConfig::new(root, run_dir, a.name);
    if let Some(s) = a.supervisor {
        cfg.supervisor = s;
    }
    if let Some(v) = a.vmm {
        cfg.vmm = v;
    }
    if let Some(v) = a.agent {
        cfg.agent = v;
    }
    cfg.vm_boot_timeout = a.vm_boot_timeout;
    cfg.log_max_size = a.log_max_size;
    cfg.log_max_files = a.log_max_files;
    cfg.insecure_registries = a.insecure_registries;
    cfg.userns_default = a.userns_default;
    cfg.dns_upstreams = a.dns_upstreams;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vesseld: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let socket = cfg.socket();
    let tcp = a.tcp;
    let shown = match &tcp {
        Some(t) => format!("{} and https://{}", socket.display(), t.addr),
        None => socket.display().to_string(),
    };
    match rt.block_on(server::run(cfg, tcp, || eprintln!("vesseld: serving on {shown}"))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vesseld: {}", vessel_runtime::logging::one_line(&e));
            ExitCode::from(1)
        }
    }
}
