//! glibc's malloc under the filters: a thread of the most restricted kind (device) that frees
//! enough memory for its heap to shrink goes on living. Without vessel-vmm's single malloc
//! arena (`seccomp::enable`) that shrink opens /proc/sys/vm/overcommit_memory and the filter
//! kills the process, which the second child shows, so the first one is known to shrink a heap.
//!
//! `harness = false`: each child does its work before any other thread exists.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use vessel_vmm::seccomp::ThreadKind;

mod common;
use common::without_core_file;

const MODE: &str = "VESSEL_TEST_HEAP_TRIM_MODE";

/// Chunks below the mmap threshold come from the thread's heap; freed newest first they merge
/// into its top, which grows past the trim threshold: glibc shrinks the heap.
fn trim_the_heap() {
    let chunks: Vec<Box<[u8]>> = (0..64u8).map(|i| vec![i; 32 << 10].into_boxed_slice()).collect();
    for chunk in chunks.into_iter().rev() {
        drop(std::hint::black_box(chunk));
    }
}

fn child(mode: &str) {
    vessel_vmm::seccomp::enable().expect("SIGSYS reporter");
    if mode == "arena-per-thread" {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 8) };
    }
    std::thread::spawn(|| {
        vessel_vmm::seccomp::install(ThreadKind::Device).expect("device filter");
        trim_the_heap();
    })
    .join()
    .expect("the device thread");
}

fn run_child(mode: &str) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("this test's path"));
    without_core_file(cmd.env(MODE, mode))
        .output()
        .expect("start the child")
}

fn main() {
    if let Ok(mode) = std::env::var(MODE) {
        child(&mode);
        return;
    }
    let one_arena = run_child("vessel");
    let err = String::from_utf8_lossy(&one_arena.stderr);
    assert!(
        one_arena.status.success(),
        "a device thread that shrank its heap died: {:?} {err}",
        one_arena.status
    );
    println!("test a_device_thread_may_shrink_its_heap_under_the_filter ... ok");

    let per_thread = run_child("arena-per-thread");
    let err = String::from_utf8_lossy(&per_thread.stderr);
    assert_eq!(per_thread.status.signal(), Some(libc::SIGSYS), "{err}");
    let expected = format!(
        "seccomp: a device thread made forbidden system call {}",
        libc::SYS_openat
    );
    assert!(err.contains(&expected), "{err}");
    println!("test with_an_arena_per_thread_the_same_frees_open_a_file ... ok");
}
