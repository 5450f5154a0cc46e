//! `exec`: start another process inside a running container, in all of its namespaces and its cgroup.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::create::{clone_child, write_pid_file};
use super::{ContainerError, Runtime};
use crate::channel::{self, Channel, Message};
use crate::namespaces::{clone_flag, kind_name, Joined};
use crate::process::{console, rlimits, Finisher};
use crate::state::Status;

#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub id: String,
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: i32,
}

/// Runs the process; returns its exit code when not detached.
pub fn exec(rt: &Runtime, opts: &ExecOptions) -> Result<Option<i32>, ContainerError> {
    let (record, _) = {
        let sd = rt.open(&opts.id, true)?;
        let record = sd.load()?;
        let status = record.status(&sd);
        if !matches!(status, Status::Running | Status::Created) {
            return Err(ContainerError::WrongStatus {
                id: opts.id.clone(),
                status,
                action: "exec in it",
            });
        }
        (record, sd)
    };
    let wants_tty = opts.process.terminal().unwrap_or(false);
    if wants_tty && opts.console_socket.is_none() && opts.detach {
        return Err(ContainerError::Config(
            "process.terminal is true but no --console-socket was given for a detached exec".into(),
        ));
    }
    // A terminal with nobody to take it: we take it and relay it, as `run` does.
    let relay_socket = if wants_tty && opts.console_socket.is_none() {
        Some(super::tty_relay::ConsoleSocket::bind(&opts.id)?)
    } else {
        None
    };
    let console_path = opts
        .console_socket
        .clone()
        .or_else(|| relay_socket.as_ref().map(|s| s.path.clone()));
    let console = console_path
        .as_deref()
        .map(super::create::connect_console)
        .transpose()?;
    let namespaces = container_namespaces(&record.spec, record.pid)?;
    // Joining the pid namespace affects only children: do it here, so the one child we fork is inside.
    if let Some(pid_ns) = namespaces.iter().find(|j| j.kind == LinuxNamespaceType::Pid) {
        setns(&pid_ns.file, CloneFlags::CLONE_NEWPID)
            .map_err(ContainerError::os(format!("join {}", pid_ns.path.display())))?;
    }
    let linux = record.spec.linux().clone().unwrap_or_default();
    // The seccomp agent's path is a host path: connect before the child enters the container's mounts.
    let agent = crate::process::connect_seccomp_agent(linux.seccomp().as_ref())?;
    let state = record.state_json(Status::Running).to_string();
    let (parent_end, child_end) = channel::pair()?;
    let child = clone_child(CloneFlags::empty(), || {
        let e = child_main(ExecChild {
            channel: &child_end,
            namespaces: &namespaces,
            process: &opts.process,
            linux: &linux,
            console_fd: console.as_ref().map(|c| c.as_raw_fd()),
            preserve_fds: opts.preserve_fds,
            agent: agent.as_ref(),
            state: &state,
        });
        let _ = child_end.send(&Message::Failed(e));
        1
    })?;
    drop(child_end);
    let reap_on_error = |e: ContainerError| {
        let _ = nix::sys::signal::kill(Pid::from_raw(child), nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(child), None);
        e
    };
    record
        .cgroup
        .add_process(child)
        .map_err(|e| reap_on_error(e.into()))?;
    parent_end
        .send(&Message::Proceed)
        .map_err(|e| reap_on_error(e.into()))?;
    match parent_end.recv().map_err(|e| reap_on_error(e.into()))? {
        Some(Message::Ready) => {}
        Some(Message::Failed(e)) => return Err(reap_on_error(ContainerError::Init(e))),
        _ => {
            return Err(reap_on_error(ContainerError::Init(
                "The exec process exited during set-up".into(),
            )))
        }
    }
    // EOF now means the exec succeeded (the channel is close-on-exec).
    if let Some(Message::Failed(e)) = parent_end.recv().map_err(|e| reap_on_error(e.into()))? {
        return Err(reap_on_error(ContainerError::Init(e)));
    }
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, child)?;
    }
    if opts.detach {
        return Ok(None);
    }
    let relay = relay_socket
        .map(|s| s.receive())
        .transpose()
        .map_err(reap_on_error)?;
    Ok(Some(super::run::wait_forwarding(child, relay)?))
}

/// The namespaces of the container's init that differ from ours, in the order to join them (mount last).
fn container_namespaces(spec: &oci_spec::runtime::Spec, pid: i32) -> Result<Vec<Joined>, ContainerError> {
    let mut out = Vec::new();
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in list {
        let kind = ns.typ();
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{}", kind_name(kind)));
        let ours = PathBuf::from(format!("/proc/self/ns/{}", kind_name(kind)));
        let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            out.push(Joined::open(kind, &theirs)?);
        }
    }
    // Root joins the user namespace after the others: a namespace the container joined rather than made
    // (a manager's network namespace) is owned by ours, and from inside the container's user namespace it
    // could not be joined. Without privileges the user namespace must come first, to grant them.
    let user_rank = if nix::unistd::geteuid().is_root() { 8 } else { 0 };
    out.sort_by_key(|j| match j.kind {
        LinuxNamespaceType::User => user_rank,
        LinuxNamespaceType::Mount => 9,
        _ => 5,
    });
    Ok(out)
}

/// What the forked exec process needs.
struct ExecChild<'a> {
    channel: &'a Channel,
    namespaces: &'a [Joined],
    process: &'a Process,
    linux: &'a oci_spec::runtime::Linux,
    console_fd: Option<i32>,
    preserve_fds: i32,
    agent: Option<&'a std::os::unix::net::UnixStream>,
    state: &'a str,
}

fn child_main(c: ExecChild) -> String {
    let ExecChild {
        channel,
        namespaces,
        process,
        linux,
        console_fd,
        preserve_fds,
        agent,
        state,
    } = c;
    let run = || -> Result<Finisher, String> {
        channel
            .expect(Message::Proceed, "the parent's go-ahead")
            .map_err(|e| e.to_string())?;
        for j in namespaces.iter().filter(|j| j.kind != LinuxNamespaceType::Pid) {
            setns(&j.file, clone_flag(j.kind))
                .map_err(|e| format!("Cannot join {}: {e}", j.path.display()))?;
        }
        nix::unistd::setsid().map_err(|e| format!("Cannot start a new session: {e}"))?;
        if process.terminal().unwrap_or(false) {
            let size = process
                .console_size()
                .map(|b| (b.height() as u16, b.width() as u16));
            let (master, slave) = console::open(size).map_err(|e| e.to_string())?;
            console::send_master(console_fd.ok_or("no console socket")?, &master)
                .map_err(|e| e.to_string())?;
            console::attach(&master, slave).map_err(|e| e.to_string())?;
        }
        if let Some(limits) = process.rlimits() {
            rlimits::apply(limits).map_err(|e| e.to_string())?;
        }
        let mut f = Finisher::new(process, linux.seccomp().as_ref(), preserve_fds, None)
            .map_err(|e| e.to_string())?;
        f.use_agent_connection(agent.and_then(|a| a.try_clone().ok()));
        f.change_dir().map_err(|e| e.to_string())?;
        Ok(f)
    };
    match run() {
        Ok(f) => {
            if let Err(e) = channel.send(&Message::Ready) {
                return e.to_string();
            }
            f.finish(state).to_string()
        }
        Err(e) => e,
    }
}
