//! `create`: set up a container's namespaces, cgroup and root filesystem, and leave its init process waiting
//! for `start` on the exec fifo.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMapping, LinuxNamespaceType, LinuxResources, Spec,
};

use super::init::{self, InitContext};
use super::{ContainerError, Runtime};
use crate::cgroups::Cgroup;
use crate::channel::{self, Message};
use crate::hooks;
use crate::namespaces::{clone_flag, Plan};
use crate::spec::Bundle;
use crate::state::{live_start_time, ContainerRecord, StateDir, Status};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
}

/// Cleans up a half-created container unless disarmed: kill the init, remove the cgroup and the state dir.
struct Rollback<'a> {
    state: &'a StateDir,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.destroy();
        }
        let _ = self.state.remove();
    }
}

pub fn create(rt: &Runtime, opts: &CreateOptions) -> Result<ContainerRecord, ContainerError> {
    create_from(rt, opts, Bundle::load(&opts.bundle)?)
}

/// `create` with the bundle already loaded (by `run`, which looks at it first).
pub(super) fn create_from(
    rt: &Runtime,
    opts: &CreateOptions,
    bundle: Bundle,
) -> Result<ContainerRecord, ContainerError> {
    for name in &bundle.unknown_capabilities {
        crate::logging::warn(&format!("Unknown capability {name} ignored"));
    }
    let spec = &bundle.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or(crate::process::ProcessError::NoProcess)?;
    if let Some(limits) = process.rlimits() {
        crate::process::rlimits::validate(limits).map_err(crate::process::ProcessError::from)?;
    }
    if process.terminal().unwrap_or(false) && opts.console_socket.is_none() {
        return Err(ContainerError::Config(
            "process.terminal is true but no --console-socket was given".into(),
        ));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let plan = Plan::from_spec(linux.namespaces().as_deref().unwrap_or(&[]))?;
    super::validate::linux(&linux, &plan)?;
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !plan.has(LinuxNamespaceType::Uts) {
        return Err(ContainerError::Config(
            "hostname is set but the container has no UTS namespace".into(),
        ));
    }
    if plan.creates(LinuxNamespaceType::User) && linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
        return Err(ContainerError::Config(
            "a new user namespace needs linux.uidMappings and gidMappings".into(),
        ));
    }
    let console = opts.console_socket.as_deref().map(connect_console).transpose()?;

    let state_dir = StateDir::create(&rt.root, &opts.id)?;
    let mut rollback = Rollback {
        state: &state_dir,
        cgroup: None,
        pid: None,
        armed: true,
    };

    let cgroup = Cgroup::resolve(linux.cgroups_path().as_deref(), &opts.id, rt.systemd_cgroup)?;
    cgroup.create()?;
    rollback.cgroup = Some(cgroup.clone());
    cgroup.apply(&effective_resources(&linux))?;
    let fifo = state_dir.fifo_path();
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
        .map_err(ContainerError::os(format!("create {}", fifo.display())))?;
    // Writable by anyone (not subject to our umask): the init may run as an unmapped user in a user namespace.
    nix::sys::stat::fchmodat(
        None,
        &fifo,
        Mode::from_bits_truncate(0o622),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(ContainerError::os(format!("chmod {}", fifo.display())))?;

    // Socket activation (sd_listen_fds): the fds are ours only if LISTEN_PID names us.
    let listen_pid_is_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let listen_fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|n| *n > 0)
        .filter(|_| listen_pid_is_us);
    let preserve_fds = opts.preserve_fds + listen_fds.unwrap_or(0);
    let (parent_end, child_end) = channel::pair()?;
    let joins_user = plan.joins(LinuxNamespaceType::User);
    // A new user namespace with other namespaces joined (a network namespace a manager made, as podman and
    // vesseld do): join those first, with our privileges, then create the user namespace (runc's order).
    // From inside a new user namespace, joining a namespace owned by ours would be refused.
    let user_after_joins = plan.creates(LinuxNamespaceType::User) && !plan.joined.is_empty();
    // Namespaces made by clone itself; the rest (cgroup after the cgroup move, time, and everything when a user
    // namespace is joined first) are unshared by the child.
    // When the child must fork the real init (pid namespace joined, time namespace), the child stays in our
    // pid namespace so the pid it reports is valid here.
    let defer_pid = plan.creates(LinuxNamespaceType::Time) || plan.joins(LinuxNamespaceType::Pid);
    let clone_flags = if joins_user || user_after_joins {
        CloneFlags::empty()
    } else {
        plan.new
            .iter()
            .filter(|t| !matches!(t, LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time))
            .filter(|t| !(defer_pid && **t == LinuxNamespaceType::Pid))
            .fold(CloneFlags::empty(), |acc, t| acc | clone_flag(*t))
    };

    let ctx = InitContext {
        bundle: &bundle,
        plan: &plan,
        clone_flags,
        channel: &child_end,
        fifo: &fifo,
        console: console.as_ref().map(|c| c.as_raw_fd()),
        no_pivot: opts.no_pivot,
        preserve_fds,
        listen_fds,
    };
    let child = clone_child(clone_flags, || init::run(ctx))?;
    drop(child_end);
    rollback.pid = Some(child);

    if clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
        write_id_maps(
            child,
            linux.uid_mappings().as_deref(),
            linux.gid_mappings().as_deref(),
        )?;
    }
    cgroup.add_process(child)?;
    if let Some(adj) = process.oom_score_adj() {
        let path = format!("/proc/{child}/oom_score_adj");
        fs::write(&path, adj.to_string()).map_err(|source| ContainerError::Io {
            action: "write",
            path: path.into(),
            source,
        })?;
    }
    parent_end.send(&Message::Proceed)?;

    let mut init_pid = child;
    let record_base = |pid: i32| ContainerRecord {
        id: opts.id.clone(),
        pid,
        pid_start_time: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: crate::clock::now_rfc3339(),
        owner: "root".into(),
        cgroup: cgroup.clone(),
        spec: spec.clone(),
        use_systemd_cgroup: rt.systemd_cgroup,
    };
    loop {
        match parent_end.recv()? {
            Some(Message::Child(pid)) => {
                // The intermediate process is done; the container's init is its child.
                let _ = waitpid(Pid::from_raw(child), None);
                init_pid = pid;
                rollback.pid = Some(pid);
            }
            Some(Message::RunCreateRuntimeHooks) => {
                let state = record_base(init_pid).state_json(Status::Creating).to_string();
                run_create_runtime_hooks(spec, &state)?;
                parent_end.send(&Message::CreateRuntimeHooksDone(state))?;
            }
            Some(Message::MapIds) => {
                write_id_maps(
                    child,
                    linux.uid_mappings().as_deref(),
                    linux.gid_mappings().as_deref(),
                )?;
                parent_end.send(&Message::Proceed)?;
            }
            Some(Message::Ready) => break,
            Some(Message::Failed(msg)) => return Err(ContainerError::Init(msg)),
            Some(other) => {
                return Err(ContainerError::Init(format!(
                    "Unexpected message from the container: {other:?}"
                )))
            }
            None => {
                return Err(ContainerError::Init(
                    "The container process exited during set-up".into(),
                ))
            }
        }
    }
    let mut record = record_base(init_pid);
    record.pid_start_time = live_start_time(init_pid)
        .ok_or_else(|| ContainerError::Init("The container process exited during set-up".into()))?;
    state_dir.save(&record)?;
    if let Some(pid_file) = &opts.pid_file {
        write_pid_file(pid_file, init_pid)?;
    }
    rollback.armed = false;
    Ok(record)
}

/// The config's resources with the device rules every container needs: the config's own rules, then the
/// standard devices (null, zero, tty, pts, ...), then each device the config creates (last match wins).
fn effective_resources(linux: &oci_spec::runtime::Linux) -> LinuxResources {
    let mut res = linux.resources().clone().unwrap_or_default();
    let mut rules = res.devices().clone().unwrap_or_default();
    rules.extend(crate::cgroups::default_device_rules());
    for d in linux.devices().iter().flatten() {
        let typ = match d.typ() {
            LinuxDeviceType::B => LinuxDeviceType::B,
            _ => LinuxDeviceType::C,
        };
        if let Ok(rule) = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .major(d.major())
            .minor(d.minor())
            .access("rwm".to_string())
            .build()
        {
            rules.push(rule);
        }
    }
    res.set_devices(Some(rules));
    res
}

fn run_create_runtime_hooks(spec: &Spec, state: &str) -> Result<(), ContainerError> {
    if let Some(h) = spec.hooks() {
        #[allow(deprecated)]
        hooks::run_all("prestart", h.prestart().as_ref(), state)?;
        hooks::run_all("createRuntime", h.create_runtime().as_ref(), state)?;
    }
    Ok(())
}

/// Connect to the caller's console socket (it gets the pty master once the container makes it).
pub(super) fn connect_console(path: &Path) -> Result<UnixStream, ContainerError> {
    UnixStream::connect(path).map_err(|source| ContainerError::Io {
        action: "connect to console socket",
        path: path.to_path_buf(),
        source,
    })
}

/// Write the pid file atomically, as clients (containerd, conmon) read it as soon as create returns.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), ContainerError> {
    let tmp = path.with_extension("vessel-tmp");
    fs::write(&tmp, pid.to_string()).map_err(|source| ContainerError::Io {
        action: "write",
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, path).map_err(|source| ContainerError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn write_id_maps(
    pid: i32,
    uids: Option<&[LinuxIdMapping]>,
    gids: Option<&[LinuxIdMapping]>,
) -> Result<(), ContainerError> {
    let fmt = |maps: Option<&[LinuxIdMapping]>| {
        maps.unwrap_or(&[])
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    for (file, maps) in [("uid_map", uids), ("gid_map", gids)] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        fs::write(&path, fmt(maps)).map_err(|source| ContainerError::Io {
            action: "write",
            path,
            source,
        })?;
    }
    Ok(())
}

/// clone(2) with namespace flags, fork-style (the child runs on a copy of our stack). The child runs `f` and
/// never returns here.
pub(super) fn clone_child<F: FnOnce() -> i32>(flags: CloneFlags, f: F) -> Result<i32, ContainerError> {
    // SAFETY: with no CLONE_VM and a NULL stack, clone behaves like fork: the child gets a private copy of the
    // address space. This process is single-threaded, so no lock can be held by a thread that the child lacks.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(ContainerError::Os {
            action: "clone the container process".into(),
            source: nix::Error::last(),
        }),
        0 => {
            let code = f();
            // SAFETY: _exit ends the child without running the parent's atexit handlers or unwinding its stack.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid as i32),
    }
}
