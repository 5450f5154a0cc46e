//! Seccomp filters per kind of thread: which system calls the VMM's threads may make.
//!
//! [`enable`] installs the SIGSYS reporter; from then on every thread calls [`install`] (or
//! [`install_or_exit`]) with its kind as the first thing it does, which compiles that kind's BPF
//! program (`bpf.rs`: a binary search over syscall numbers, cheap for the kernel to take) the
//! first time (a VM without an API never compiles the API's; the main thread compiles
//! only its own before the VMM is ready), and the main thread installs [`ThreadKind::Vmm`] before it
//! builds the VM. Filters are per thread (no TSYNC): each thread adds its own.
//!
//! Seccomp filters are inherited by the threads a thread creates and they stack (a call must
//! pass every filter), so each list also admits what the threads its owner starts need before
//! they add their own: the vCPU list covers device threads (a vCPU's register write activates a
//! device, which may start its backend thread), and the API list covers a whole VM (a VM
//! configured through the API is built and started on the API thread). `rules.rs` holds the lists.
//!
//! A call outside the list is trapped: the SIGSYS handler writes one line naming the thread kind
//! and the call's number, then the process dies of SIGSYS. The call itself never runs. `clone3`
//! fails with ENOSYS instead (glibc then uses `clone`, whose flags a filter can check), so that
//! threads can be created but processes cannot.

mod bpf;
mod ioctls;
mod report;
mod rules;
#[cfg(test)]
mod tests;

use bpf::Program;
use std::sync::OnceLock;

/// The kinds of thread the VMM runs, each with its own allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread: builds the VM (when not built through the API) and waits for its end.
    Vmm,
    /// The API server thread and the API's signal thread.
    Api,
    /// A vCPU thread.
    Vcpu,
    /// Device worker threads: queue-notify workers, the net RX and vsock backends, the console
    /// input feeder.
    Device,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 4] = [Self::Vmm, Self::Api, Self::Vcpu, Self::Device];

    pub fn name(self) -> &'static str {
        match self {
            Self::Vmm => "vmm",
            Self::Api => "api",
            Self::Vcpu => "vcpu",
            Self::Device => "device",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("Cannot install the {kind} seccomp filter: {source}")]
    Install {
        kind: &'static str,
        source: std::io::Error,
    },
    #[error("Cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

/// The test hook's variable: a thread of the named kind makes a forbidden call (`execve` of a
/// path that does not exist) right after installing its filter. Tests only.
pub const SELFTEST_ENV: &str = "VESSEL_VMM_SECCOMP_SELFTEST";

struct Filters {
    /// Compiled on first use, then shared by every thread of the kind.
    by_kind: [OnceLock<Program>; 4],
    selftest: Option<ThreadKind>,
}

static FILTERS: OnceLock<Filters> = OnceLock::new();

/// Installs the SIGSYS reporter; [`install`] does nothing until this has run. Calling it again
/// changes nothing.
///
/// Call it before any thread starts: it also gives glibc's malloc a single arena. A thread's own
/// arena, the first time it shrinks, makes glibc open /proc/sys/vm/overcommit_memory from
/// whichever thread freed the memory, an open no filter can allow (the restored VMM's disk
/// thread died of it in the lab); the main arena shrinks with brk instead.
pub fn enable() -> Result<(), SeccompError> {
    if FILTERS.get().is_some() {
        return Ok(());
    }
    one_malloc_arena();
    let filters = Filters {
        by_kind: Default::default(),
        selftest: std::env::var(SELFTEST_ENV)
            .ok()
            .and_then(|name| ThreadKind::from_name(&name)),
    };
    report::install_handler().map_err(SeccompError::Handler)?;
    let _ = FILTERS.set(filters);
    Ok(())
}

fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets one of the allocator's parameters (its return value says
    // whether it took it; with the default allocator it always does).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// `kind`'s program: its list allowed, every other call trapped (the SIGSYS reporter).
fn compile(kind: ThreadKind) -> Program {
    bpf::compile(&rules::allowed(kind), libc::SECCOMP_RET_TRAP)
}

/// `kind`'s program, compiled the first time it is asked for.
fn program(filters: &Filters, kind: ThreadKind) -> &Program {
    filters.by_kind[kind.index()].get_or_init(|| compile(kind))
}

/// Whether [`enable`] has run (filters are being installed).
pub fn enabled() -> bool {
    FILTERS.get().is_some()
}

/// Restricts the calling thread to `kind`'s system calls, for good. Does nothing unless
/// [`enable`] ran (a library user that wants no filters never calls it).
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    let Some(filters) = FILTERS.get() else {
        return Ok(());
    };
    report::set_thread_kind(kind);
    bpf::install(program(filters, kind)).map_err(|source| SeccompError::Install {
        kind: kind.name(),
        source,
    })?;
    if filters.selftest == Some(kind) {
        selftest_forbidden_call();
    }
    Ok(())
}

/// [`install`], or end the process with one line on stderr: a thread must never run without
/// the filter it was meant to have.
pub fn install_or_exit(kind: ThreadKind) {
    if let Err(e) = install(kind) {
        eprintln!("vessel-vmm: {e}");
        std::process::exit(1);
    }
}

/// A call no kind may make: `execve` (of a path that does not exist, so that a broken filter
/// shows as a process that goes on rather than as anything worse).
fn selftest_forbidden_call() {
    let path = c"/nonexistent/vessel-vmm-seccomp-selftest";
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: every pointer is a NUL-terminated string or a NULL-terminated array that lives
    // across the call; the path does not exist, so even an allowed execve returns ENOENT.
    unsafe { libc::syscall(libc::SYS_execve, path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
}
