//! Seccomp: the runtime-spec `linux.seccomp` section compiled into a libseccomp filter and loaded.
//!
//! Two steps, so that every mistake in a profile is reported before anything is forked:
//!
//! 1. [`build_filter`] validates the profile and compiles it into a libseccomp filter context, nothing
//!    loaded yet. Run it in the runtime, early (`create`), and report its error as the one line it is.
//! 2. [`Filter::load`] hands the filter to the kernel for the calling process, in the container's init, as
//!    late as possible (just before `execve`). It returns the user-notification fd when the profile uses
//!    `SCMP_ACT_NOTIFY`; [`send_notify_fd`] passes that fd to the seccomp agent at `listenerPath`.
//!
//! The semantics follow runc, which the profiles in the wild (Docker's, podman's) were written for:
//!
//! - `SCMP_ACT_KILL` is `SCMP_ACT_KILL_THREAD`; `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` return `errnoRet`,
//!   `EPERM` when it is absent; `errnoRet` with any other action is an error (the spec says "MUST fail").
//! - The native architecture is always in the filter; each listed architecture is added to it.
//! - A rule whose action equals the default action is redundant and skipped (libseccomp refuses it).
//! - A syscall name libseccomp does not know is skipped, not an error: profiles name syscalls newer than
//!   the library or absent on this architecture. [`Filter::skipped_syscalls`] lists them for the caller's log.
//! - Conditions of one entry are AND-ed into one rule, unless two of them test the same argument: then,
//!   as in runc, *every* condition of that entry becomes a rule of its own, so they are all OR-ed.
//! - `SCMP_ACT_NOTIFY` needs `listenerPath`, cannot be the default action and cannot be used on `write`
//!   (the runtime's init writes to its parent after loading the filter, before the agent has the fd).
//! - The filter does not set `no_new_privs` itself: the caller sets it when `process.noNewPrivileges` asks,
//!   and otherwise loads the filter while it still holds `CAP_SYS_ADMIN`.
//!
//! The filter is built with libseccomp's binary-tree layout (`SCMP_FLTATR_CTL_OPTIMIZE` = 2) so a long
//! allow list costs a few comparisons per syscall, not one per listed name. Building takes one libseccomp
//! context per architecture, merged at the end, with rules fed in the order libseccomp 2.5 inserts fastest
//! (see `add_rules`); a `Filter` is not `Send` (libseccomp's contexts are not), build it where it is loaded
//! or forked from.

mod notify;
mod plan;

#[cfg(test)]
mod tests;

// Raw x86-64 syscall numbers (mkdir, getpgid...) in the child processes.
#[cfg(all(test, target_arch = "x86_64"))]
mod kernel_tests;

use std::io::{Read, Seek};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libseccomp::error::{SeccompErrno, SeccompError as ScmpError};
use libseccomp::{ScmpAction, ScmpArch, ScmpFilterContext, ScmpSyscall, ScmpVersion};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompFilterFlag};

pub use notify::{send_notify_fd, send_notify_fd_over};

/// Syscalls that may not carry `SCMP_ACT_NOTIFY`: the runtime's init uses them after the filter is loaded
/// and before the agent holds the notify fd, so a notification would wait forever.
pub const NOTIFY_REFUSED_SYSCALLS: &[&str] = &["write"];

/// Errors of building, loading and handing over a seccomp filter; each names the part of the profile at fault.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "Seccomp {what}: errnoRet {value} is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}"
    )]
    ErrnoRetNotAllowed {
        what: String,
        action: String,
        value: u32,
    },
    #[error("Seccomp {what}: errnoRet {value} is out of range (0 to 65535)")]
    ErrnoRetRange { what: String, value: u32 },
    #[error(
        "Seccomp defaultAction SCMP_ACT_NOTIFY is not supported: the runtime's own syscalls after loading the \
         filter would wait for an agent that does not have the notify fd yet"
    )]
    NotifyDefault,
    #[error("Seccomp {what}: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath to be set")]
    NotifyWithoutListener { what: String },
    #[error(
        "Seccomp SCMP_ACT_NOTIFY cannot be used for syscall {syscall}: the runtime needs it to hand the notify fd over"
    )]
    NotifyRefused { syscall: String },
    #[error("Seccomp listenerMetadata is set but listenerPath is not")]
    MetadataWithoutListener,
    #[error("Seccomp syscalls[{index}] has no names")]
    NoNames { index: usize },
    #[error("Seccomp syscalls[{index}] has an empty syscall name")]
    EmptyName { index: usize },
    #[error("Seccomp {what}: argument index {index} is out of range (0 to 5)")]
    ArgIndex { what: String, index: usize },
    #[error("Seccomp architecture {arch} cannot be added to the filter (libseccomp {version}): {reason}")]
    Arch {
        arch: String,
        version: String,
        reason: String,
    },
    #[error("Seccomp flag {flag} is not supported here (libseccomp {version}): {source}")]
    Flag {
        flag: String,
        version: String,
        source: ScmpError,
    },
    #[error("Cannot create a seccomp filter with default action {action}: {source}")]
    Init { action: String, source: ScmpError },
    #[error("Cannot set seccomp filter attribute {attr}: {source}")]
    Attr { attr: &'static str, source: ScmpError },
    #[error("Cannot add seccomp rule {action} for syscall {syscall}: {source}")]
    Rule {
        syscall: String,
        action: String,
        source: ScmpError,
    },
    #[error("Cannot load the seccomp filter into the kernel: {source}{hint}")]
    Load {
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("Cannot get the seccomp notify fd after loading the filter: {source}")]
    NotifyFd { source: std::io::Error },
    #[error("Cannot export the seccomp filter: {source}")]
    Export { source: std::io::Error },
    #[error("Container state for the seccomp agent at {path}: {reason}")]
    State {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("Cannot send the seccomp notify fd to the agent at {path}: {source}")]
    Send {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A compiled seccomp filter, not yet loaded.
#[derive(Debug)]
pub struct Filter {
    ctx: ScmpFilterContext,
    skipped: Vec<String>,
    uses_notify: bool,
    rules: usize,
}

impl Filter {
    /// Syscall names of the profile that libseccomp does not know here, each once, in profile order.
    /// They were left out of the filter; the caller decides whether and how to log them.
    pub fn skipped_syscalls(&self) -> &[String] {
        &self.skipped
    }

    /// Whether a rule uses `SCMP_ACT_NOTIFY`, i.e. [`Filter::load`] will return a notify fd.
    pub fn uses_notify(&self) -> bool {
        self.uses_notify
    }

    /// Number of libseccomp rules added (one profile entry can give several, one per name and condition group).
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// The filter as libseccomp's human-readable pseudo filter code (PFC), for debugging and tests.
    pub fn to_pfc(&self) -> Result<String, SeccompError> {
        let export = |e: std::io::Error| SeccompError::Export { source: e };
        let fd = nix::sys::memfd::memfd_create(
            c"vessel-seccomp-pfc",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(|e| export(e.into()))?;
        self.ctx
            .export_pfc(fd.as_fd())
            .map_err(|e| export(os_error(&e)))?;
        let mut file = std::fs::File::from(fd);
        file.rewind().map_err(export)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(export)?;
        Ok(text)
    }

    /// Load the filter into the kernel for the calling thread (every thread with
    /// `SECCOMP_FILTER_FLAG_TSYNC`). From here on the calling process is confined.
    ///
    /// Returns the user-notification fd (close-on-exec) if a rule uses `SCMP_ACT_NOTIFY`; send it to the
    /// agent with [`send_notify_fd`]. Without `no_new_privs` the caller needs `CAP_SYS_ADMIN`.
    pub fn load(self) -> Result<Option<OwnedFd>, SeccompError> {
        self.ctx.load().map_err(|e| {
            let source = os_error(&e);
            let hint = match source.raw_os_error() {
                Some(libc::EACCES) => " (without no_new_privs, loading a filter needs CAP_SYS_ADMIN)",
                Some(libc::ESRCH) => " (SECCOMP_FILTER_FLAG_TSYNC: another thread has a diverging filter)",
                _ => "",
            };
            SeccompError::Load { source, hint }
        })?;
        if !self.uses_notify {
            return Ok(None);
        }
        let raw = self
            .ctx
            .get_notify_fd()
            .map_err(|e| SeccompError::NotifyFd { source: os_error(&e) })?;
        // SAFETY: libseccomp returned `raw` as the open listener fd it keeps in its global state; it stays
        // open at least until the `reset_global_state` below, and we only borrow it to duplicate it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        let owned = borrowed
            .try_clone_to_owned()
            .map_err(|source| SeccompError::NotifyFd { source })?;
        // libseccomp would otherwise keep the listener number, close it whenever its global state is reset
        // (possibly after the number was reused) and refuse a listener to a later filter of this process.
        // Resetting closes its copy; ours stays. Failure only leaves one close-on-exec fd behind.
        let _ = libseccomp::reset_global_state();
        Ok(Some(owned))
    }
}

/// Compile the OCI seccomp config into a libseccomp filter context, not yet loaded.
pub fn build_filter(config: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let has_listener = config
        .listener_path()
        .as_ref()
        .is_some_and(|p| !p.as_os_str().is_empty());
    if config.listener_metadata().as_ref().is_some_and(|m| !m.is_empty()) && !has_listener {
        return Err(SeccompError::MetadataWithoutListener);
    }
    let default = plan::scmp_action(config.default_action(), config.default_errno_ret(), || {
        "defaultAction".into()
    })?;
    if default == ScmpAction::Notify {
        return Err(SeccompError::NotifyDefault);
    }
    let plan = plan::plan(config, default, has_listener)?;

    // The native architecture is always there; each other listed one gets a context of its own.
    let native = ScmpArch::native();
    let mut others: Vec<(ScmpArch, Arch)> = Vec::new();
    for &arch in config.architectures().iter().flatten() {
        let scmp = scmp_arch(arch);
        if scmp != ScmpArch::Native && scmp != native && !others.iter().any(|&(a, _)| a == scmp) {
            check_arch(default, scmp, arch)?;
            others.push((scmp, arch));
        }
    }

    // One context per architecture, each fed its rules in the order its libseccomp backend inserts
    // fastest (see `add_rules`), merged into the native one at the end.
    let mut ctx = new_context(config, default)?;
    add_rules(&mut ctx, &plan.rules, native)?;
    for (scmp, arch) in others {
        let mut other = new_context(config, default)?;
        single_arch(&mut other, scmp, arch)?;
        add_rules(&mut other, &plan.rules, scmp)?;
        ctx.merge(other).map_err(|e| arch_error(arch, &e))?;
    }

    // Binary tree over the syscall numbers. libseccomp 2.5.x mishandles a tree without any rule, so only
    // with rules; a library without the attribute simply keeps the linear layout.
    if !plan.rules.is_empty() {
        let _ = ctx.set_ctl_optimize(2);
    }
    Ok(Filter {
        ctx,
        skipped: plan.skipped,
        uses_notify: plan.uses_notify,
        rules: plan.rules.len(),
    })
}

/// A filter context with the profile's default action, flags and attributes, for the native architecture.
fn new_context(config: &LinuxSeccomp, default: ScmpAction) -> Result<ScmpFilterContext, SeccompError> {
    let mut ctx = ScmpFilterContext::new(default).map_err(|source| SeccompError::Init {
        action: plan::action_name(default),
        source,
    })?;
    for &flag in config.flags().iter().flatten() {
        set_flag(&mut ctx, flag)?;
    }
    // The caller owns no_new_privs (process.noNewPrivileges); raw kernel errors make load failures readable.
    set_attr(&mut ctx, "SCMP_FLTATR_CTL_NNP", |c| c.set_ctl_nnp(false))?;
    set_attr(&mut ctx, "SCMP_FLTATR_API_SYSRAWRC", |c| c.set_api_sysrawrc(true))?;
    Ok(ctx)
}

/// Make `ctx` a filter for `scmp` alone.
fn single_arch(ctx: &mut ScmpFilterContext, scmp: ScmpArch, arch: Arch) -> Result<(), SeccompError> {
    ctx.add_arch(scmp).map_err(|e| arch_error(arch, &e))?;
    ctx.remove_arch(ScmpArch::Native)
        .map_err(|e| arch_error(arch, &e))?;
    Ok(())
}

/// Refuse, before any rule is added, an architecture that libseccomp cannot put beside the native one.
fn check_arch(default: ScmpAction, scmp: ScmpArch, arch: Arch) -> Result<(), SeccompError> {
    let init = |source| SeccompError::Init {
        action: plan::action_name(default),
        source,
    };
    let mut native = ScmpFilterContext::new(default).map_err(init)?;
    let mut other = ScmpFilterContext::new(default).map_err(init)?;
    single_arch(&mut other, scmp, arch)?;
    native.merge(other).map_err(|e| arch_error(arch, &e))?;
    Ok(())
}

fn arch_error(arch: Arch, e: &ScmpError) -> SeccompError {
    SeccompError::Arch {
        arch: arch.to_string(),
        version: library_version(),
        reason: match e.errno() {
            Some(SeccompErrno::EINVAL) => "this libseccomp does not know it".into(),
            Some(SeccompErrno::EDOM) => "its byte order differs from the native architecture's".into(),
            _ => e.to_string(),
        },
    }
}

/// Add `rules` to the context of the single architecture `arch`.
///
/// The order is chosen for speed: libseccomp 2.5 keeps an architecture's syscalls in a list sorted by
/// number and every insertion walks it from the smallest, so rules go in descending syscall number and
/// each insertion stops at the head. That is safe because libseccomp keeps the rules of different
/// syscalls apart and the rules of one syscall keep the profile's order. Architectures that multiplex
/// syscalls (x86's `socketcall` and `ipc`, s390, ppc, 32-bit mips...) do mix rules of different
/// syscalls, and there the result can depend on the order: they get the profile's order, as in runc.
fn add_rules(
    ctx: &mut ScmpFilterContext,
    rules: &[plan::Rule<'_>],
    arch: ScmpArch,
) -> Result<(), SeccompError> {
    let mut order: Vec<(u32, usize)> = Vec::with_capacity(rules.len());
    if multiplexes(arch) {
        order.extend((0..rules.len()).map(|i| (0, i)));
    } else {
        let native = ScmpArch::native();
        let number = |rule: &plan::Rule<'_>| {
            if arch == native {
                rule.syscall.as_raw_syscall()
            } else {
                ScmpSyscall::from_name_by_arch(rule.name, arch).map_or(-1, ScmpSyscall::as_raw_syscall)
            }
        };
        // libseccomp compares unsigned: pseudo-syscalls (negative) sort last there, so come first here.
        order.extend(rules.iter().enumerate().map(|(i, r)| (number(r) as u32, i)));
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    for (_, i) in order {
        let rule = &rules[i];
        ctx.add_rule_conditional(rule.action, rule.syscall, &rule.conditions)
            .map_err(|source| SeccompError::Rule {
                syscall: rule.name.to_string(),
                action: plan::action_name(rule.action),
                source,
            })?;
    }
    Ok(())
}

/// Whether libseccomp's backend for `arch` rewrites rules onto multiplexed syscalls (its `rule_add`
/// hook). Architectures not listed, including future ones, are assumed to.
fn multiplexes(arch: ScmpArch) -> bool {
    !matches!(
        arch,
        ScmpArch::X8664
            | ScmpArch::X32
            | ScmpArch::Aarch64
            | ScmpArch::Arm
            | ScmpArch::Mips64
            | ScmpArch::Mips64N32
            | ScmpArch::Mipsel64
            | ScmpArch::Mipsel64N32
            | ScmpArch::Parisc
            | ScmpArch::Parisc64
            | ScmpArch::Riscv64
            | ScmpArch::Loongarch64
    )
}

fn set_flag(ctx: &mut ScmpFilterContext, flag: LinuxSeccompFilterFlag) -> Result<(), SeccompError> {
    use LinuxSeccompFilterFlag as F;
    let result = match flag {
        F::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
        F::SeccompFilterFlagLog => ctx.set_ctl_log(true),
        F::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
        // libseccomp >= 2.6.0 only; older libraries report that in the error.
        F::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
    };
    result.map(drop).map_err(|source| SeccompError::Flag {
        flag: flag.to_string(),
        version: library_version(),
        source,
    })
}

fn set_attr(
    ctx: &mut ScmpFilterContext,
    attr: &'static str,
    set: impl FnOnce(&mut ScmpFilterContext) -> Result<&mut ScmpFilterContext, ScmpError>,
) -> Result<(), SeccompError> {
    set(ctx)
        .map(drop)
        .map_err(|source| SeccompError::Attr { attr, source })
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn library_version() -> String {
    ScmpVersion::current().map_or_else(|_| "(unknown version)".into(), |v| v.to_string())
}

/// A libseccomp failure as the OS error behind it when there is one (`SCMP_FLTATR_API_SYSRAWRC`).
fn os_error(e: &ScmpError) -> std::io::Error {
    match e.sysrawrc() {
        Some(rc) if rc < 0 => std::io::Error::from_raw_os_error(-rc),
        _ => std::io::Error::other(e.to_string()),
    }
}
