//! The container side of `create`: runs in the cloned process, finishes the namespaces, builds the root
//! filesystem, reports ready, waits on the exec fifo for `start`, then becomes the container's program.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::{setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::create::clone_child;
use crate::channel::{Channel, Message};
use crate::hooks;
use crate::namespaces::{clone_flag, Plan};
use crate::process::{console, rlimits, Finisher};
use crate::rootfs::{self, RootfsContext};
use crate::spec::Bundle;

pub struct InitContext<'a> {
    pub bundle: &'a Bundle,
    pub plan: &'a Plan,
    /// Namespaces the clone already created.
    pub clone_flags: CloneFlags,
    pub channel: &'a Channel,
    pub fifo: &'a Path,
    pub console: Option<RawFd>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    pub listen_fds: Option<i32>,
}

/// Entry point in the cloned child; the return value is its exit code when set-up fails.
pub fn run(ctx: InitContext) -> i32 {
    match set_up(&ctx) {
        Ok(Stage::Intermediate) => 0,
        Ok(Stage::Started(finisher, state)) => {
            let e = finisher.finish(&state);
            // The runtime has exited by now: the container's stderr is the only place left to say why.
            let _ = writeln!(std::io::stderr(), "vessel-runtime: {e}");
            127
        }
        Err(e) => {
            let _ = ctx.channel.send(&Message::Failed(e));
            1
        }
    }
}

enum Stage {
    /// This process only forked the real init and is done.
    Intermediate,
    Started(Box<Finisher>, String),
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn become_root() -> Result<(), String> {
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| format!("Cannot become gid 0 in the user namespace: {e}"))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| format!("Cannot become uid 0 in the user namespace: {e}"))
}

fn set_up(ctx: &InitContext) -> Result<Stage, String> {
    ctx.channel
        .expect(Message::Proceed, "the parent's go-ahead")
        .map_err(err)?;
    let spec = &ctx.bundle.spec;
    let plan = ctx.plan;
    if ctx.clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
        become_root()?;
    }
    for j in &plan.joined {
        j.join().map_err(err)?;
        if j.kind == LinuxNamespaceType::User {
            become_root()?;
        }
    }
    // What clone did not create: everything when a user namespace was joined first, the cgroup namespace
    // (only now are we in our cgroup), and the time namespace.
    let mut later = CloneFlags::empty();
    for t in &plan.new {
        let f = clone_flag(*t);
        if !ctx.clone_flags.contains(f) {
            later |= f;
        }
    }
    if later.contains(CloneFlags::CLONE_NEWUSER) {
        if plan.joins(LinuxNamespaceType::User) {
            return Err("Creating a user namespace after joining one is not supported".into());
        }
        // The other namespaces are joined: now our own user namespace, mapped by the parent.
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("Cannot create the user namespace: {e}"))?;
        ctx.channel.send(&Message::MapIds).map_err(err)?;
        ctx.channel
            .expect(Message::Proceed, "the parent's id maps")
            .map_err(err)?;
        become_root()?;
        later.remove(CloneFlags::CLONE_NEWUSER);
    }
    if !later.is_empty() {
        unshare(later).map_err(|e| format!("Cannot create namespaces {later:?}: {e}"))?;
    }
    let time_ns = later.contains(clone_flag(LinuxNamespaceType::Time));
    if time_ns {
        write_time_offsets(spec)?;
    }
    // A new pid or time namespace, or a joined pid namespace, applies only to children: fork the real init.
    let needs_fork =
        later.contains(CloneFlags::CLONE_NEWPID) || time_ns || plan.joins(LinuxNamespaceType::Pid);
    if needs_fork {
        let pid = clone_child(CloneFlags::empty(), || init_process(ctx)).map_err(err)?;
        ctx.channel.send(&Message::Child(pid)).map_err(err)?;
        return Ok(Stage::Intermediate);
    }
    continue_as_init(ctx)
}

/// The forked real init, when there is an intermediate process.
fn init_process(ctx: &InitContext) -> i32 {
    match continue_as_init(ctx) {
        Ok(Stage::Started(finisher, state)) => {
            let e = finisher.finish(&state);
            let _ = writeln!(std::io::stderr(), "vessel-runtime: {e}");
            127
        }
        Ok(Stage::Intermediate) => 0,
        Err(e) => {
            let _ = ctx.channel.send(&Message::Failed(e));
            1
        }
    }
}

fn continue_as_init(ctx: &InitContext) -> Result<Stage, String> {
    let spec = &ctx.bundle.spec;
    let plan = ctx.plan;
    let linux = spec.linux().clone().unwrap_or_default();
    let process = spec
        .process()
        .as_ref()
        .ok_or("process is missing from config.json")?;
    nix::unistd::setsid().map_err(|e| format!("Cannot start a new session: {e}"))?;
    set_names(spec)?;

    let new_mnt = plan.creates(LinuxNamespaceType::Mount);
    if new_mnt {
        let rctx = RootfsContext {
            spec,
            rootfs: &ctx.bundle.rootfs,
            bundle: &ctx.bundle.dir,
            in_user_ns: plan.has(LinuxNamespaceType::User),
            new_cgroup_ns: plan.creates(LinuxNamespaceType::Cgroup),
        };
        rootfs::prepare(&rctx).map_err(err)?;
    }
    let hooks = spec.hooks().clone().unwrap_or_default();
    #[allow(deprecated)]
    let wants_state = hooks.prestart().is_some()
        || hooks.create_runtime().is_some()
        || hooks.create_container().is_some()
        || hooks.start_container().is_some()
        || linux
            .seccomp()
            .as_ref()
            .is_some_and(|s| s.listener_path().is_some());
    let mut state = String::new();
    if wants_state {
        ctx.channel.send(&Message::RunCreateRuntimeHooks).map_err(err)?;
        state = match ctx.channel.recv().map_err(err)? {
            Some(Message::CreateRuntimeHooksDone(s)) => s,
            Some(Message::Failed(e)) => return Err(e),
            other => return Err(format!("Unexpected message from the runtime: {other:?}")),
        };
        hooks::run_all("createContainer", hooks.create_container().as_ref(), &state).map_err(err)?;
    }
    // Held from before the root switch: the fifo lives in the runtime's state directory on the host.
    let fifo = open(ctx.fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("Cannot open the exec fifo: {e}"))?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    let fifo = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fifo) };
    let agent = crate::process::connect_seccomp_agent(linux.seccomp().as_ref()).map_err(err)?;
    if new_mnt {
        rootfs::switch_root(&ctx.bundle.rootfs, ctx.no_pivot).map_err(err)?;
    }
    write_sysctls(spec)?;
    if process.terminal().unwrap_or(false) {
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        let (master, slave) = console::open(size).map_err(err)?;
        let socket = ctx
            .console
            .ok_or("process.terminal is true but there is no console socket")?;
        console::send_master(socket, &master).map_err(err)?;
        console::attach(&master, slave).map_err(err)?;
    }
    if new_mnt {
        rootfs::finalize(spec).map_err(err)?;
    }
    if let Some(limits) = process.rlimits() {
        rlimits::apply(limits).map_err(err)?;
    }
    set_personality(spec)?;
    let mut finisher = Finisher::new(
        process,
        linux.seccomp().as_ref(),
        ctx.preserve_fds,
        ctx.listen_fds,
    )
    .map_err(err)?;
    finisher.use_agent_connection(agent);
    finisher.change_dir().map_err(err)?;
    ctx.channel.send(&Message::Ready).map_err(err)?;

    let mut start = wait_for_start(&fifo)?;
    let running_state = state.replace("\"status\":\"creating\"", "\"status\":\"running\"");
    hooks::run_all("startContainer", hooks.start_container().as_ref(), &running_state)
        .map_err(|e| report_late(&e.to_string()))?;
    // `start` returns (and runs poststart hooks) once it reads this byte: after the startContainer hooks.
    start
        .write_all(b"0")
        .map_err(|e| report_late(&format!("Cannot write the exec fifo: {e}")))?;
    // Our end stays open (it is close-on-exec) until the execve of the container's program: `start` waits
    // for its end-of-file, so a signal sent once `start` returned reaches the program, not this init.
    std::mem::forget(start);
    Ok(Stage::Started(Box::new(finisher), running_state))
}

/// After `create` returned there is no channel reader: errors go to the container's stderr.
fn report_late(msg: &str) -> String {
    let _ = writeln!(std::io::stderr(), "vessel-runtime: {msg}");
    // SAFETY: ends this process at once; nothing else of ours is running in it.
    unsafe { libc::_exit(1) }
}

/// Block until `start` opens the fifo for reading.
fn wait_for_start(fifo: &OwnedFd) -> Result<std::fs::File, String> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    // While we are non-dumpable our /proc/self/fd belongs to the host's root, which root in a user namespace
    // may not open: be dumpable just for this open (our binary is on a read-only mount in any case).
    crate::sealed_exe::set_dumpable(true);
    let opened = OpenOptions::new().write(true).open(&path);
    crate::sealed_exe::set_dumpable(false);
    opened.map_err(|e| report_late(&format!("Cannot open the exec fifo: {e}")))
}

fn set_names(spec: &Spec) -> Result<(), String> {
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(|e| format!("Cannot set hostname {h:?}: {e}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        // SAFETY: the pointer and length describe the bytes of a live &str.
        let r = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if r != 0 {
            return Err(format!("Cannot set domainname {d:?}: {}", nix::Error::last()));
        }
    }
    Ok(())
}

fn write_sysctls(spec: &Spec) -> Result<(), String> {
    let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    for (key, value) in sysctl {
        if key.contains("..") || key.starts_with('/') {
            return Err(format!("Invalid sysctl name {key:?}"));
        }
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value).map_err(|e| format!("Cannot set sysctl {key}={value}: {e}"))?;
    }
    Ok(())
}

fn write_time_offsets(spec: &Spec) -> Result<(), String> {
    let Some(offsets) = spec.linux().as_ref().and_then(|l| l.time_offsets().as_ref()) else {
        return Ok(());
    };
    let mut text = String::new();
    for (clock, off) in offsets {
        text.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    fs::write("/proc/self/timens_offsets", text)
        .map_err(|e| format!("Cannot set time namespace offsets: {e}"))
}

fn set_personality(spec: &Spec) -> Result<(), String> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) else {
        return Ok(());
    };
    let domain = match p.domain() {
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux => 0x0000,
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality takes an integer and changes only this process's execution domain.
    if unsafe { libc::personality(domain) } == -1 {
        return Err(format!("Cannot set personality: {}", nix::Error::last()));
    }
    Ok(())
}
