//! The container lifecycle, one file per verb, over the state kept under the runtime's root directory.

mod create;
mod delete;
mod exec;
mod info;
mod init;
mod kill;
mod pause;
mod run;
mod start;
mod tty_relay;
mod update;
mod validate;

use std::path::PathBuf;

pub use create::{create, CreateOptions};
pub use delete::delete;
pub use exec::{exec, ExecOptions};
pub use info::{list, ps_pids, state, stats, ContainerSummary};
pub use kill::{kill, parse_signal};
pub use pause::{pause, resume};
pub use run::{run, RunOptions};
pub use start::start;
pub use update::update;

use crate::state::{StateDir, StateError, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Channel(#[from] crate::channel::ChannelError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error("{0}")]
    Init(String),
    #[error("Container {id} is {status}: cannot {action}")]
    WrongStatus {
        id: String,
        status: Status,
        action: &'static str,
    },
    #[error("Invalid config: {0}")]
    Config(String),
    #[error("Cannot {action}: {source}")]
    Os { action: String, source: nix::Error },
    #[error("Cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Unknown signal {0:?}")]
    BadSignal(String),
}

impl ContainerError {
    pub fn os(action: impl Into<String>) -> impl FnOnce(nix::Error) -> ContainerError {
        let action = action.into();
        move |source| ContainerError::Os { action, source }
    }
}

/// Global options every command shares.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// State directory (`--root`).
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

impl Runtime {
    pub fn new(root: PathBuf, systemd_cgroup: bool) -> Runtime {
        Runtime { root, systemd_cgroup }
    }

    fn open(&self, id: &str, locked: bool) -> Result<StateDir, ContainerError> {
        Ok(if locked {
            StateDir::open_locked(&self.root, id)?
        } else {
            StateDir::open(&self.root, id)?
        })
    }
}
