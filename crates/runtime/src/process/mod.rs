//! Turning the process that will become the container's program into it: security labels, no_new_privs,
//! seccomp, capabilities, user, umask, file descriptors, signal dispositions and mask, and the exec. Shared by `create` (the init) and
//! `exec`.

pub mod capabilities;
pub mod console;
pub mod credentials;
pub mod exec;
pub mod labels;
pub mod rlimits;
pub mod signals;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::seccomp;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Capabilities(#[from] capabilities::CapabilityError),
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error(transparent)]
    Labels(#[from] labels::LabelError),
    #[error(transparent)]
    Rlimits(#[from] rlimits::RlimitError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error("Cannot set no_new_privileges: {0}")]
    NoNewPrivs(nix::Error),
    #[error("Cannot change to the working directory {path}: {source}")]
    Cwd { path: String, source: nix::Error },
    #[error("process is missing from config.json")]
    NoProcess,
}

/// Everything decided before the final, irreversible steps; built early so config errors surface at create.
pub struct Finisher {
    process: Process,
    program: exec::Program,
    filter: Option<seccomp::Filter>,
    /// The seccomp agent: its path (for messages), a connection made before the root switch, the metadata.
    notify_listener: Option<(PathBuf, Option<UnixStream>, String)>,
    preserve_fds: i32,
}

/// The environment the program gets: the config's, plus HOME when missing (from the container's
/// /etc/passwd), plus LISTEN_FDS/LISTEN_PID for socket activation when fds are handed through.
pub fn program_env(process: &Process, listen_fds: Option<i32>) -> Vec<String> {
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        let home = home_of(process.user().uid()).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    if let Some(n) = listen_fds {
        env.retain(|kv| !kv.starts_with("LISTEN_FDS=") && !kv.starts_with("LISTEN_PID="));
        env.push(format!("LISTEN_FDS={n}"));
        env.push(format!("LISTEN_PID={}", std::process::id()));
    }
    env
}

fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok()? == uid).then(|| f[5].to_string())
    })
}

impl Finisher {
    /// Resolve the program (in the container's root, which must already be the process's root) and compile
    /// the seccomp filter.
    pub fn new(
        process: &Process,
        seccomp: Option<&LinuxSeccomp>,
        preserve_fds: i32,
        listen_fds: Option<i32>,
    ) -> Result<Finisher, ProcessError> {
        let args = process.args().clone().unwrap_or_default();
        let env = program_env(process, listen_fds);
        let arg0 = args.first().ok_or(exec::ExecError::NoArgs)?;
        let path = exec::find_program(arg0, &env)?;
        let program = exec::Program::new(path, &args, &env)?;
        let filter = seccomp.map(seccomp::build_filter).transpose()?;
        let notify_listener = seccomp.and_then(|s| {
            let path = s.listener_path().clone()?;
            Some((path, None, s.listener_metadata().clone().unwrap_or_default()))
        });
        labels::check(process)?;
        Ok(Finisher {
            process: process.clone(),
            program,
            filter,
            notify_listener,
            preserve_fds,
        })
    }

    /// Use a connection to the seccomp agent made earlier (see [`connect_seccomp_agent`]).
    pub fn use_agent_connection(&mut self, connection: Option<UnixStream>) {
        if let (Some((_, stream, _)), Some(c)) = (&mut self.notify_listener, connection) {
            *stream = Some(c);
        }
    }

    pub fn change_dir(&self) -> Result<(), ProcessError> {
        let cwd = self.process.cwd();
        nix::unistd::chdir(cwd).map_err(|source| ProcessError::Cwd {
            path: cwd.display().to_string(),
            source,
        })
    }

    /// The last steps, in the order the kernel needs them, then exec. Returns only on failure.
    pub fn finish(mut self, state_json: &str) -> ProcessError {
        match self.finish_inner(state_json) {
            Ok(()) => {
                signals::reset_for_exec();
                ProcessError::from(self.program.exec())
            }
            Err(e) => e,
        }
    }

    fn finish_inner(&mut self, state_json: &str) -> Result<(), ProcessError> {
        let p = self.process.clone();
        labels::apply(&p)?;
        let nnp = p.no_new_privileges().unwrap_or(false);
        if nnp {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(ProcessError::NoNewPrivs(nix::Error::last()));
            }
        } else {
            // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it while we still have it.
            self.load_seccomp(state_json)?;
        }
        if let Some(caps) = p.capabilities() {
            capabilities::drop_bounding(caps)?;
        }
        credentials::switch_user(p.user())?;
        if let Some(caps) = p.capabilities() {
            capabilities::apply_sets(caps)?;
        }
        if let Some(mask) = p.user().umask() {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
        }
        close_other_fds(3 + self.preserve_fds);
        if nnp {
            // As late as possible, so the filter has to allow only what the program itself needs.
            self.load_seccomp(state_json)?;
        }
        Ok(())
    }

    fn load_seccomp(&mut self, state_json: &str) -> Result<(), ProcessError> {
        if let Some(filter) = self.filter.take() {
            if let Some(fd) = filter.load()? {
                if let Some((path, stream, metadata)) = self.notify_listener.take() {
                    let state = state_json.as_bytes();
                    match stream {
                        Some(s) => seccomp::send_notify_fd_over(s, &path, &fd, state, &metadata)?,
                        None => seccomp::send_notify_fd(&path, &fd, state, &metadata)?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// Connect to the seccomp agent while its (host) path is still reachable, before the root switch.
pub fn connect_seccomp_agent(seccomp: Option<&LinuxSeccomp>) -> Result<Option<UnixStream>, ProcessError> {
    let Some(path) = seccomp.and_then(|s| s.listener_path().clone()) else {
        return Ok(None);
    };
    let stream = UnixStream::connect(&path).map_err(|source| seccomp::SeccompError::Send { path, source })?;
    Ok(Some(stream))
}

/// Mark every descriptor from `first` up close-on-exec, so nothing of the runtime leaks into the container.
pub fn close_other_fds(first: i32) {
    // SAFETY: close_range only changes descriptor flags; CLOSE_RANGE_CLOEXEC leaves them open until exec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        // Older kernels: walk /proc/self/fd.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = dir
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            for fd in fds.into_iter().filter(|fd| *fd >= first) {
                let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
            }
        }
    }
}
