//! Each kind's filter, applied in a forked child (never in the test process, whose other tests
//! keep running), against calls it must allow and calls it must refuse.

use super::ioctls;
use super::rules::allowed;
use super::ThreadKind;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

fn program(kind: ThreadKind) -> BpfProgram {
    let filter = SeccompFilter::new(
        allowed(kind),
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .expect("filter");
    BpfProgram::try_from(filter).expect("compiles")
}

/// Runs `call` in a child under `kind`'s filter: Ok(()) if it returned, Err(signal) if it died.
fn in_child(kind: ThreadKind, call: fn()) -> Result<(), i32> {
    let program = program(kind);
    // SAFETY: the child only applies the prepared filter, makes the call and _exits; it never
    // returns into the test harness or touches locks another thread may hold.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match seccompiler::apply_filter(&program) {
            Ok(()) => {
                call();
                0
            }
            Err(_) => 99,
        };
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked, with a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        Err(libc::WTERMSIG(status))
    } else {
        assert_eq!(libc::WEXITSTATUS(status), 0, "the filter did not apply");
        Ok(())
    }
}

fn kvm_run_on_a_bad_fd() {
    // SAFETY: an ioctl on fd -1 only fails with EBADF.
    unsafe { libc::ioctl(-1, ioctls::VCPU[0].1 as _) };
}

fn open_a_file() {
    // SAFETY: opens (or fails to open) a constant path; the descriptor is closed at _exit.
    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
}

fn exec_nothing() {
    let path = c"/nonexistent";
    let argv = [path.as_ptr(), std::ptr::null()];
    // SAFETY: NUL-terminated path and NULL-terminated argv/envp arrays that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), [std::ptr::null()].as_ptr()) };
}

fn fork_a_process() {
    // SAFETY: a raw clone without CLONE_THREAD, like fork; if it ran, the new child _exits.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
    if pid == 0 {
        // SAFETY: ends that child at once.
        unsafe { libc::_exit(0) };
    }
}

fn mount_something() {
    // SAFETY: a mount that fails (or would be refused) with constant arguments.
    unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/nonexistent".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
}

#[test]
fn every_kind_refuses_exec_fork_and_mount() {
    for kind in ThreadKind::ALL {
        for call in [exec_nothing, fork_a_process, mount_something] {
            assert_eq!(in_child(kind, call), Err(libc::SIGSYS), "{kind}");
        }
    }
}

#[test]
fn only_vcpu_and_building_threads_may_run_a_vcpu() {
    assert_eq!(in_child(ThreadKind::Vcpu, kvm_run_on_a_bad_fd), Ok(()));
    assert_eq!(in_child(ThreadKind::Api, kvm_run_on_a_bad_fd), Ok(()));
    assert_eq!(
        in_child(ThreadKind::Device, kvm_run_on_a_bad_fd),
        Err(libc::SIGSYS)
    );
}

#[test]
fn vcpu_and_device_threads_open_no_files() {
    assert_eq!(in_child(ThreadKind::Vcpu, open_a_file), Err(libc::SIGSYS));
    assert_eq!(in_child(ThreadKind::Device, open_a_file), Err(libc::SIGSYS));
    assert_eq!(in_child(ThreadKind::Vmm, open_a_file), Ok(()));
}

#[test]
fn every_kind_compiles_within_the_kernels_limit() {
    for kind in ThreadKind::ALL {
        let len = program(kind).len();
        assert!(len < 4096, "{kind}: {len} instructions");
    }
}
