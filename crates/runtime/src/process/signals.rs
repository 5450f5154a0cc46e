//! The signal state a container's program starts with: every signal at its default action, none
//! blocked. An ignored disposition and the blocked mask survive `execve`, so without this the
//! program would inherit whatever the runtime's caller ignored or blocked (SIGHUP under nohup;
//! glibc's posix_spawn leaves its two internal signals, 32 and 33, ignored in the children it
//! starts) and what the runtime itself ignores (Rust's runtime ignores SIGPIPE). A shell cannot
//! even trap a signal it was started with ignored.

/// The kernel's `struct sigaction` (x86-64 and arm64 layout): the C library's wrapper refuses
/// signals 32 and 33, which it keeps for itself.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Every signal but SIGKILL and SIGSTOP back to SIG_DFL, then none blocked. Runs in the
/// single-threaded process just before exec; a signal already pending is then delivered with its
/// default action, as it would be to the program.
pub fn reset_for_exec() {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in (1..=64).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
        // SAFETY: `default` is a valid kernel sigaction of the size passed (the 8-byte mask);
        // installing SIG_DFL runs no code of ours, and the old action is not asked for.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            );
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}
