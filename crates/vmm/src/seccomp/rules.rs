//! The allow-lists, by group, and which groups each thread kind gets.
//!
//! The groups come from tracing the VMM (`strace -f -ff`, one file per thread, named by the
//! thread's PR_SET_NAME) on the hand-made guests of the tests: boot to power-off with 1-2 vCPUs,
//! the API (configure, start, pause, resume, snapshot, restore), taps and vsock, and the net and
//! vsock device tests; then widened for what other C libraries and kernels do with the same
//! work (clone3 or clone, rseq, futex_waitv, the p*v2 variants, epoll_pwait, ...).

use super::bpf::{Allow, Condition};
use super::ioctls;
use super::ThreadKind;
use std::collections::BTreeMap;

#[derive(Default)]
struct List(BTreeMap<i64, Allow>);

impl List {
    fn always(&mut self, calls: &[i64]) -> &mut Self {
        for &call in calls {
            self.0.insert(call, Allow::Always);
        }
        self
    }

    /// `call` when one of `rules` holds (each a list of conditions that must all hold).
    fn when(&mut self, call: i64, rules: Vec<Vec<Condition>>) -> &mut Self {
        match self.0.entry(call).or_insert_with(|| Allow::When(Vec::new())) {
            Allow::When(existing) => existing.extend(rules),
            Allow::Always | Allow::Errno(_) => {}
        }
        self
    }

    /// `call` when argument `arg` equals one of `values`.
    fn when_arg(&mut self, call: i64, arg: u8, values: &[u64]) -> &mut Self {
        let rules = values.iter().map(|&v| vec![equals(arg, v)]).collect();
        self.when(call, rules)
    }

    fn ioctls(&mut self, requests: &[(&str, u64)]) -> &mut Self {
        let values: Vec<u64> = requests.iter().map(|&(_, nr)| nr).collect();
        self.when_arg(libc::SYS_ioctl, 1, &values)
    }
}

/// The low 32 bits of argument `arg` equal `value` (ioctl requests, flags and commands are ints
/// to the kernel, whatever the C prototype's width).
fn equals(arg: u8, value: u64) -> Condition {
    masked(arg, u32::MAX, value)
}

/// The low 32 bits of argument `arg`, under `mask`, equal `value`.
fn masked(arg: u8, mask: u32, value: u64) -> Condition {
    let value = u32::try_from(value).unwrap_or_else(|_| unreachable!("the values here have 32 bits"));
    Condition { arg, mask, value }
}

/// The C library and Rust's runtime, in every thread: memory, locks, signals, thread exit,
/// time, randomness, writing error lines, naming the thread and adding a filter.
fn runtime(list: &mut List) {
    use libc::*;
    list.always(&[
        SYS_futex,
        SYS_futex_waitv,
        SYS_mmap,
        SYS_munmap,
        SYS_mprotect,
        SYS_madvise,
        SYS_mremap,
        SYS_brk,
        SYS_rt_sigreturn,
        SYS_rt_sigprocmask,
        SYS_rt_sigaction,
        SYS_sigaltstack,
        SYS_restart_syscall,
        SYS_exit,
        SYS_exit_group,
        SYS_getpid,
        SYS_gettid,
        SYS_tgkill,
        SYS_sched_getaffinity,
        SYS_sched_yield,
        SYS_rseq,
        SYS_set_robust_list,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_gettimeofday,
        SYS_getrandom,
        SYS_close,
        SYS_write,
    ]);
    list.when_arg(
        SYS_prctl,
        0,
        &[
            PR_SET_NAME as u64,
            PR_GET_NAME as u64,
            PR_SET_NO_NEW_PRIVS as u64,
            PR_GET_NO_NEW_PRIVS as u64,
        ],
    );
    // Adding a filter only ever takes rights away.
    list.when_arg(SYS_seccomp, 0, &[SECCOMP_SET_MODE_FILTER as u64]);
}

/// Starting threads: `clone` with CLONE_THREAD only (a new process is refused); `clone3` answers
/// ENOSYS.
fn threads(list: &mut List) {
    let thread = libc::CLONE_THREAD as u32;
    list.when(libc::SYS_clone, vec![vec![masked(0, thread, thread.into())]]);
    // clone3's flags are behind a pointer, out of a filter's reach: it fails with ENOSYS, and
    // glibc and Rust's runtime fall back to clone.
    list.0.insert(libc::SYS_clone3, Allow::Errno(libc::ENOSYS as u32));
}

/// What devices do with descriptors they already hold: disks, taps, eventfds, unix sockets
/// (vsock's host side), polling; and the few fcntl/ioctl requests those need.
fn device_io(list: &mut List) {
    use libc::*;
    list.always(&[
        SYS_read,
        SYS_readv,
        SYS_pread64,
        SYS_preadv,
        SYS_preadv2,
        SYS_writev,
        SYS_pwrite64,
        SYS_pwritev,
        SYS_pwritev2,
        SYS_lseek,
        SYS_fsync,
        SYS_fdatasync,
        SYS_fallocate,
        SYS_fstat,
        SYS_newfstatat,
        SYS_statx,
        SYS_poll,
        SYS_ppoll,
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_wait,
        SYS_epoll_pwait,
        SYS_eventfd2,
        SYS_accept4,
        SYS_connect,
        SYS_sendto,
        SYS_recvfrom,
        SYS_sendmsg,
        SYS_recvmsg,
        SYS_shutdown,
        SYS_getsockopt,
    ]);
    // Unix sockets only: vsock's host side.
    list.when_arg(SYS_socket, 0, &[AF_UNIX as u64]);
    list.when_arg(
        SYS_fcntl,
        1,
        &[
            F_GETFD as u64,
            F_SETFD as u64,
            F_GETFL as u64,
            F_SETFL as u64,
            F_DUPFD_CLOEXEC as u64,
        ],
    );
    list.ioctls(ioctls::DEVICE);
}

/// Building, restoring and snapshotting a VM, and serving the API socket: opening files, KVM
/// (any KVM ioctl: the VM and vCPU set-up is long and its fds are the VMM's own), taps.
fn build(list: &mut List) {
    use libc::*;
    list.always(&[
        SYS_openat,
        SYS_open,
        SYS_flock,
        SYS_ftruncate,
        SYS_rename,
        SYS_unlink,
        SYS_umask,
        SYS_chmod,
        SYS_fchmod,
        SYS_bind,
        SYS_listen,
        SYS_getsockname,
        SYS_setsockopt,
        SYS_fcntl,
        SYS_rt_sigtimedwait,
        SYS_sysinfo,
        SYS_getcwd,
        SYS_readlink,
        SYS_prlimit64,
        SYS_msync,
        SYS_dup,
        SYS_dup3,
        SYS_pipe2,
        SYS_getdents64,
    ]);
    list.when(
        SYS_ioctl,
        vec![vec![masked(1, ioctls::TYPE_MASK, ioctls::KVM_TYPE)]],
    );
    list.ioctls(ioctls::BUILD);
}

fn vcpu(list: &mut List) {
    list.ioctls(ioctls::VCPU);
}

/// The allow-list of `kind`. A kind also gets the groups of the threads it may start (filters are
/// inherited and stack, see the module's documentation).
pub(super) fn allowed(kind: ThreadKind) -> BTreeMap<i64, Allow> {
    let mut list = List::default();
    runtime(&mut list);
    device_io(&mut list);
    match kind {
        ThreadKind::Device => {}
        ThreadKind::Vcpu => {
            threads(&mut list);
            vcpu(&mut list);
        }
        ThreadKind::Vmm | ThreadKind::Api => {
            threads(&mut list);
            vcpu(&mut list);
            build(&mut list);
        }
    }
    list.0
}
