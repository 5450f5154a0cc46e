//! Each kind's filter, applied in a forked child (never in the test process, whose other tests
//! keep running), against calls it must allow and calls it must refuse.

use super::bpf::{self, Allow, Condition, Program};
use super::ioctls;
use super::rules::allowed;
use super::ThreadKind;
use std::collections::BTreeMap;

fn program(kind: ThreadKind) -> Program {
    super::compile(kind)
}

/// Runs `call` in a child under `kind`'s filter: Ok(()) if it returned, Err(signal) if it died.
fn in_child(kind: ThreadKind, call: fn()) -> Result<(), i32> {
    let program = program(kind);
    // SAFETY: the child only applies the prepared filter, makes the call and _exits; it never
    // returns into the test harness or touches locks another thread may hold.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match bpf::install(&program) {
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

/// What a filter makes of one call, run as the kernel runs classic BPF (the instructions
/// `bpf::compile` emits), checking every jump lands inside the program, forwards; and how many
/// instructions ran before the verdict or the first load of an argument (the walk the kernel
/// makes for every syscall number when the filter is installed).
fn run(program: &Program, nr: u32, arch: u32, args: [u64; 6]) -> (u32, usize) {
    let word = |offset: u32| -> u32 {
        match offset {
            0 => nr,
            4 => arch,
            16..=56 if offset % 8 == 0 => args[(offset as usize - 16) / 8] as u32,
            _ => panic!("a load at offset {offset}"),
        }
    };
    let (mut pc, mut acc, mut steps, mut walk) = (0usize, 0u32, 0usize, None);
    loop {
        let insn = program
            .get(pc)
            .unwrap_or_else(|| panic!("ran off the end at {pc}"));
        let (code, k) = (u32::from(insn.code), insn.k);
        let next = |skip: usize| pc + 1 + skip;
        pc = match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                if k >= 16 {
                    walk.get_or_insert(steps);
                }
                acc = word(k);
                next(0)
            }
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => {
                acc &= k;
                next(0)
            }
            c if c == libc::BPF_JMP | libc::BPF_JA => next(k as usize),
            c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                next(usize::from(if acc == k { insn.jt } else { insn.jf }))
            }
            c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => {
                next(usize::from(if acc >= k { insn.jt } else { insn.jf }))
            }
            c if c == libc::BPF_RET | libc::BPF_K => return (k, walk.unwrap_or(steps)),
            other => panic!("instruction {other:#x} at {pc}"),
        };
        steps += 1;
    }
}

const X86_64: u32 = 0xc000_003e;

/// What `list` says of the call, read directly off the list.
fn expected(list: &BTreeMap<i64, Allow>, nr: u32, args: [u64; 6]) -> u32 {
    let holds = |c: &Condition| (args[usize::from(c.arg)] as u32) & c.mask == c.value;
    match list.get(&i64::from(nr)) {
        None => libc::SECCOMP_RET_TRAP,
        Some(Allow::Always) => libc::SECCOMP_RET_ALLOW,
        Some(Allow::Errno(errno)) => libc::SECCOMP_RET_ERRNO | errno,
        Some(Allow::When(rules)) if rules.iter().any(|rule| rule.iter().all(holds)) => {
            libc::SECCOMP_RET_ALLOW
        }
        Some(Allow::When(_)) => libc::SECCOMP_RET_TRAP,
    }
}

/// Arguments that meet each condition of `list`'s rules, and near misses.
fn argument_cases(list: &BTreeMap<i64, Allow>) -> Vec<[u64; 6]> {
    let mut cases = vec![[0; 6], [u64::MAX; 6]];
    for allow in list.values() {
        let Allow::When(rules) = allow else { continue };
        for rule in rules {
            let mut meets = [0u64; 6];
            for c in rule {
                meets[usize::from(c.arg)] = u64::from(c.value) | 0xdead_0000_0000;
            }
            cases.push(meets);
            for c in rule {
                let mut misses = meets;
                misses[usize::from(c.arg)] = u64::from(c.value ^ (c.mask & c.mask.wrapping_neg()));
                cases.push(misses);
            }
        }
    }
    cases
}

fn assert_compiles_to_the_list(name: &str, list: &BTreeMap<i64, Allow>) {
    let program = bpf::compile(list, libc::SECCOMP_RET_TRAP);
    assert!(program.len() < 4096, "{name}: {} instructions", program.len());
    let cases = argument_cases(list);
    let numbers = (0..=470).chain([0x4000_0001, u32::MAX]);
    for nr in numbers {
        for args in &cases {
            assert_eq!(
                run(&program, nr, X86_64, *args).0,
                expected(list, nr, *args),
                "{name}: call {nr} with {args:x?}"
            );
        }
        // Another architecture's calls are other numbers: never allowed.
        assert_eq!(run(&program, nr, 0x4000_0003, [0; 6]).0, libc::SECCOMP_RET_TRAP);
    }
}

#[test]
fn every_kinds_program_gives_each_call_what_its_list_says() {
    for kind in ThreadKind::ALL {
        assert_compiles_to_the_list(kind.name(), &allowed(kind));
    }
}

#[test]
fn a_long_list_with_far_rule_blocks_compiles_correctly() {
    // More calls and rules than any kind has: jumps past 255 instructions, deep search.
    let mut list = BTreeMap::new();
    for nr in (0..450).step_by(2) {
        let allow = match nr % 10 {
            4 => Allow::When(
                (0..8)
                    .map(|v| {
                        vec![
                            Condition {
                                arg: 1,
                                mask: u32::MAX,
                                value: v * 7,
                            },
                            Condition {
                                arg: 2,
                                mask: 0xff00,
                                value: 0x1200,
                            },
                        ]
                    })
                    .collect(),
            ),
            2 => Allow::Errno(nr as u32),
            _ => Allow::Always,
        };
        list.insert(nr, allow);
    }
    let far = bpf::compile(&list, libc::SECCOMP_RET_TRAP).len();
    assert!(
        far > 1024,
        "{far} instructions: not the long program this test is for"
    );
    assert_compiles_to_the_list("long", &list);
}

#[test]
fn the_search_is_cheap_for_the_kernel_to_walk() {
    // The kernel runs a new filter for every syscall number; a call's walk to its verdict must
    // stay logarithmic in the list (a handful of instructions), not linear.
    let program = program(ThreadKind::Vmm);
    let longest = (0..470u32)
        .map(|nr| run(&program, nr, X86_64, [0; 6]).1)
        .max()
        .unwrap();
    assert!(longest <= 30, "a walk of {longest} instructions");
}
