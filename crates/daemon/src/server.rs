//! Running vesseld: one per root (a lock), a pid file, the API socket (mode 0660, group `vessel` when
//! that group exists), reconciliation before the first request, and a clean stop on SIGTERM / SIGINT
//! that leaves every instance running.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use crate::api::{self, AppState, Metrics};
use crate::config::DaemonConfig;
use crate::manager::Manager;
use crate::store::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("Cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("Another vesseld already runs on {root}{pid}")]
    Locked { root: String, pid: String },
    #[error("Cannot lock {path}: {source}")]
    Lock { path: String, source: std::io::Error },
    #[error("Cannot listen on {path}: {source}")]
    Listen { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("Reconciliation failed: {0}")]
    Reconcile(#[from] crate::manager::ManagerError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("Serving the API failed: {0}")]
    Serve(std::io::Error),
}

/// Held for the daemon's life: the root's lock.
pub struct RootLock {
    _file: File,
}

pub fn lock_root(cfg: &DaemonConfig) -> Result<RootLock, ServerError> {
    for d in [
        &cfg.root,
        &cfg.run_dir,
        &cfg.instances_dir(),
        &cfg.supervisors_dir(),
    ] {
        std::fs::create_dir_all(d).map_err(|source| ServerError::Dir {
            path: d.display().to_string(),
            source,
        })?;
    }
    let path = cfg.lock_file();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ServerError::Lock {
            path: path.display().to_string(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(cfg.pid_file())
            .map(|p| format!(" (pid {})", p.trim()))
            .unwrap_or_default();
        return Err(ServerError::Locked {
            root: cfg.root.display().to_string(),
            pid,
        });
    }
    Ok(RootLock { _file: file })
}

/// Serve until SIGTERM or SIGINT. `ready` is told once the socket accepts requests.
pub async fn run(
    cfg: DaemonConfig,
    tcp: Option<crate::tls::TcpConfig>,
    ready: impl FnOnce(),
) -> Result<(), ServerError> {
    // TCP's configuration is checked before anything else happens.
    let tls = tcp.as_ref().map(crate::tls::acceptor).transpose()?;
    let tokens = crate::tls::Tokens::load(tcp.as_ref().and_then(|t| t.tokens.as_deref()))?;
    let _lock = lock_root(&cfg)?;
    let _ = std::fs::write(cfg.pid_file(), format!("{}\n", std::process::id()));
    let store = Arc::new(SqliteStore::open(&cfg.database())?);
    let mgr = Manager::new(cfg.clone(), store);
    let report = mgr.reconcile().await?;
    for line in &report.lines {
        eprintln!("vesseld: reconcile: {line}");
    }
    let socket = cfg.socket();
    let (listener, ours) = match activated_listener() {
        Some(l) => (l, false),
        None => (bind(&socket)?, true),
    };
    let state = AppState {
        mgr,
        metrics: Arc::new(Metrics::default()),
        tokens: Arc::new(tokens),
    };
    let router = api::router(state);
    if let (Some(t), Some(acceptor)) = (&tcp, tls) {
        let tcp_listener =
            tokio::net::TcpListener::bind(t.addr)
                .await
                .map_err(|source| ServerError::Listen {
                    path: t.addr.to_string(),
                    source,
                })?;
        tokio::spawn(crate::tls::serve(tcp_listener, acceptor, router.clone()));
    }
    ready();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        tokio::select! {
            _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            _ = async { if let Some(i) = int.as_mut() { i.recv().await; } else { std::future::pending::<()>().await } } => {}
        }
    };
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    if ours {
        let _ = std::fs::remove_file(&socket);
    }
    let _ = std::fs::remove_file(cfg.pid_file());
    remove_cgroup_parent(&cfg);
    served.map_err(ServerError::Serve)
}

/// Our own socket: mode 0660, group `vessel` when that group exists.
fn bind(socket: &std::path::Path) -> Result<tokio::net::UnixListener, ServerError> {
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).map_err(|source| ServerError::Listen {
        path: socket.display().to_string(),
        source,
    })?;
    let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660));
    if let Ok(Some(group)) = nix::unistd::Group::from_name("vessel") {
        let _ = nix::unistd::chown(socket, None, Some(group.gid));
    }
    Ok(listener)
}

/// The socket systemd made for us (socket activation: LISTEN_PID is us, LISTEN_FDS = 1, fd 3).
fn activated_listener() -> Option<tokio::net::UnixListener> {
    let for_us = std::env::var("LISTEN_PID").ok()?.parse::<u32>().ok()? == std::process::id();
    let count = std::env::var("LISTEN_FDS").ok()?.parse::<i32>().ok()?;
    if !for_us || count != 1 {
        return None;
    }
    // SAFETY: by the socket-activation protocol fd 3 is a listening socket handed to us alone.
    let std_listener =
        unsafe { <std::os::unix::net::UnixListener as std::os::fd::FromRawFd>::from_raw_fd(3) };
    std_listener.set_nonblocking(true).ok()?;
    tokio::net::UnixListener::from_std(std_listener).ok()
}

/// The parent of our instances' cgroups, when no instance is left in it (rmdir fails otherwise).
fn remove_cgroup_parent(cfg: &DaemonConfig) {
    let parent = cfg.cgroup_parent();
    if let Ok(cg) =
        vessel_runtime::cgroups::Cgroup::resolve(Some(std::path::Path::new(&parent)), "parent", false)
    {
        for d in cg.dirs() {
            let _ = std::fs::remove_dir(&d.path);
        }
    }
}
