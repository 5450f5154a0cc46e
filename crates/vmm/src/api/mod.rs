//! The VMM's HTTP API on a unix socket: JSON over HTTP/1.1, in the spirit of Firecracker's.
//! `api/openapi.json` (next to `src/`) documents every endpoint.
//!
//! Threads: the process's main thread waits for the VM's end; one `api` thread serves every
//! connection (poll, non-blocking sockets) and owns the [`Controller`], so requests are applied
//! in order without locks; one thread waits for SIGINT, SIGTERM or SIGHUP to remove the socket
//! before the process dies. The API never runs on a vCPU thread and only pauses or resumes
//! vCPUs through [`RunningVm`].

pub mod controller;
pub mod http;
pub mod models;
pub mod server;

pub use controller::Controller;
pub use server::{ApiSocket, SocketError, SocketFile};

use crate::config::VmConfig;
use crate::exit::VmExit;
use crate::launch::{self, LaunchError};
use crate::vm::{RunningVm, VmError};
use std::path::Path;
use std::sync::mpsc::channel;
use std::sync::{Arc, OnceLock};

#[derive(Debug, thiserror::Error)]
pub enum ApiRunError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Start(#[from] VmError),
    #[error("Cannot start the API thread: {0}")]
    Thread(std::io::Error),
    #[error("The API server stopped before a VM was started")]
    ServerGone,
}

/// Runs the VMM with its API on `socket` until the VM ends, and returns how it ended.
///
/// With `boot_now` the VM in `config` is built and started at once and the API serves it;
/// otherwise the API waits for its configuration and `InstanceStart`, with `config` (the command
/// line's values) as the defaults. `on_ready` runs once the socket listens (and, with
/// `boot_now`, KVM is open). The socket file is removed when this returns and when a
/// termination signal ends the process.
pub fn run(
    socket: &Path,
    config: VmConfig,
    boot_now: bool,
    on_ready: impl FnOnce(),
) -> Result<VmExit, ApiRunError> {
    serve_vm(
        socket,
        config,
        if boot_now { Start::BootNow } else { Start::Wait },
        on_ready,
    )
}

/// How the VM behind the API comes to be.
pub enum Start {
    /// Wait for the configuration and InstanceStart.
    Wait,
    /// Build and start the VM in the config at once.
    BootNow,
    /// Serve a VM restored from a snapshot (started at once).
    Restored(Box<crate::vm::Vm>),
}

/// Like `run`, for any `Start`.
pub fn serve_vm(
    socket: &Path,
    config: VmConfig,
    start: Start,
    on_ready: impl FnOnce(),
) -> Result<VmExit, ApiRunError> {
    // Before any thread exists, so that every later thread inherits the blocked set.
    let signals = termination::block();
    let ApiSocket { listener, file } = ApiSocket::bind(socket)?;
    let _remove_on_return = RemoveOnDrop(file.clone());
    termination::spawn_cleanup(signals, file).map_err(ApiRunError::Thread)?;

    let exit = Arc::new(OnceLock::new());
    let (started, vm_started) = channel::<Arc<RunningVm>>();
    let mut controller = match start {
        Start::BootNow => {
            let kvm = launch::open_kvm(&config)?;
            on_ready();
            let vm = Arc::new(launch::build(&kvm, &config)?.start()?);
            let _ = started.send(vm.clone());
            Controller::running(config, vm, exit.clone())
        }
        Start::Restored(vm) => {
            on_ready();
            let vm = Arc::new((*vm).start()?);
            let config = vm.extras().config.clone().unwrap_or(config);
            let _ = started.send(vm.clone());
            Controller::running(config, vm, exit.clone())
        }
        Start::Wait => {
            on_ready();
            Controller::new(config, started, exit.clone())
        }
    };
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Api);
            if let Err(e) = server::serve(&listener, &mut |request| controller.handle(request)) {
                eprintln!("vessel-vmm: the API server stopped: {e}");
            }
        })
        .map_err(ApiRunError::Thread)?;

    let vm = vm_started.recv().map_err(|_| ApiRunError::ServerGone)?;
    let end = vm.wait();
    let _ = exit.set(end.clone());
    Ok(end)
}

struct RemoveOnDrop(SocketFile);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// SIGINT, SIGTERM and SIGHUP: remove the socket, then die of the signal as before.
mod termination {
    use super::SocketFile;

    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    /// Blocks the termination signals in the calling thread (and the threads it will start).
    pub fn block() -> libc::sigset_t {
        // SAFETY: sigset_t is plain data that sigemptyset initialises.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; the calls only edit it and this thread's mask.
        unsafe {
            libc::sigemptyset(&mut set);
            for signal in SIGNALS {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        set
    }

    /// A thread that waits for one of the blocked signals, removes the socket file and lets
    /// the signal's default action end the process.
    pub fn spawn_cleanup(set: libc::sigset_t, file: SocketFile) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut signal = 0;
                // SAFETY: `set` is an initialised signal set and `signal` a valid out-pointer.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                file.remove();
                // SAFETY: restores the default action and unblocks `signal` in this thread only,
                // then sends it to this thread: the process terminates as it would have.
                unsafe {
                    libc::signal(signal, libc::SIG_DFL);
                    let mut one: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut one);
                    libc::sigaddset(&mut one, signal);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
                    libc::raise(signal);
                }
                std::process::exit(128 + signal);
            })
            .map(drop)
    }
}
