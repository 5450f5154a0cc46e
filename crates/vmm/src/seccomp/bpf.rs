//! Allow-lists compiled to classic BPF for seccomp, as a binary search over syscall numbers.
//!
//! Why not a general seccomp compiler (seccompiler tests the numbers one after the other): when
//! a filter is installed, Linux (5.11 and later) runs it once for every syscall number to find the
//! calls it always allows. Over the main thread's list of about 110 calls, a linear chain made that
//! install take about 0.25 ms of the VMM's 1 ms start-up. A search tree makes each run a handful of
//! instructions. The lists need only what is here: a call allowed always, or when one of its rules
//! holds, a rule being conditions on the low 32 bits of arguments (equal, or equal under a mask).

use std::collections::BTreeMap;
use std::io;

/// `AUDIT_ARCH_X86_64`: EM_X86_64 | 64-bit | little endian.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// Offsets in `struct seccomp_data`: nr, arch, then instruction_pointer and args[6].
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;
/// Syscalls in one leaf of the search, tested in turn.
const LEAF: usize = 4;

/// `args[arg] & mask == value`, on the argument's low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    pub arg: u8,
    pub mask: u32,
    pub value: u32,
}

/// What a listed call gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    Always,
    /// When every condition of one of the rules holds (none: never).
    When(Vec<Vec<Condition>>),
    /// Fails with this errno without running.
    Errno(u32),
}

pub type Program = Vec<libc::sock_filter>;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn ret(action: u32) -> libc::sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, action)
}

fn load(offset: u32) -> libc::sock_filter {
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

/// Compiles `list`: the listed calls as they say, every other call (and another architecture's
/// calls, which would be other numbers) gets `otherwise`.
pub fn compile(list: &BTreeMap<i64, Allow>, otherwise: u32) -> Program {
    let calls: Vec<(u32, &Allow)> = list
        .iter()
        .filter_map(|(&nr, allow)| u32::try_from(nr).ok().map(|nr| (nr, allow)))
        .collect();
    let mut program = vec![
        load(OFFSET_ARCH),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            1,
            0,
        ),
        ret(otherwise),
        load(OFFSET_NR),
    ];
    // Leaves jump to the rule blocks, which follow the tree: (index of the JA, call's entry).
    let mut pending: Vec<(usize, usize)> = Vec::new();
    search(&mut program, &calls, 0, calls.len(), otherwise, &mut pending);
    for (at, entry) in pending {
        program[at].k = (program.len() - at - 1) as u32;
        if let Allow::When(rules) = calls[entry].1 {
            rule_block(&mut program, rules, otherwise);
        }
    }
    program
}

/// Emits the search over `calls[lo..hi]` (sorted by number); the accumulator holds the number.
fn search(
    program: &mut Program,
    calls: &[(u32, &Allow)],
    lo: usize,
    hi: usize,
    otherwise: u32,
    pending: &mut Vec<(usize, usize)>,
) {
    if hi - lo <= LEAF {
        for (entry, &(nr, allow)) in calls.iter().enumerate().take(hi).skip(lo) {
            // Not this one: skip the outcome's single instruction.
            program.push(jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, nr, 0, 1));
            program.push(match allow {
                Allow::Always => ret(libc::SECCOMP_RET_ALLOW),
                Allow::Errno(errno) => ret(libc::SECCOMP_RET_ERRNO | (errno & 0xffff)),
                Allow::When(_) => {
                    pending.push((program.len(), entry));
                    stmt(libc::BPF_JMP | libc::BPF_JA, 0)
                }
            });
        }
        program.push(ret(otherwise));
        return;
    }
    let mid = lo + (hi - lo) / 2;
    // number >= calls[mid]: on to the upper half (a JA, whose offset has 32 bits); else the lower.
    program.push(jump(
        libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
        calls[mid].0,
        0,
        1,
    ));
    let to_upper = program.len();
    program.push(stmt(libc::BPF_JMP | libc::BPF_JA, 0));
    search(program, calls, lo, mid, otherwise, pending);
    program[to_upper].k = (program.len() - to_upper - 1) as u32;
    search(program, calls, mid, hi, otherwise, pending);
}

/// Each rule in turn: its conditions, each failing one moving on to the next rule; a rule whose
/// conditions all hold allows the call; none left, `otherwise`.
fn rule_block(program: &mut Program, rules: &[Vec<Condition>], otherwise: u32) {
    for rule in rules {
        // Per condition: load, (and), compare. The jump past the rule is patched once its
        // length is known; rules are short, so it fits the 8-bit offset.
        let mut misses: Vec<usize> = Vec::new();
        for condition in rule {
            program.push(load(OFFSET_ARGS + 8 * u32::from(condition.arg)));
            if condition.mask != u32::MAX {
                program.push(stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, condition.mask));
            }
            misses.push(program.len());
            program.push(jump(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                condition.value,
                0,
                0,
            ));
        }
        program.push(ret(libc::SECCOMP_RET_ALLOW));
        let next_rule = program.len();
        for at in misses {
            program[at].jf = u8::try_from(next_rule - at - 1)
                .unwrap_or_else(|_| unreachable!("a rule has a few conditions"));
        }
    }
    program.push(ret(otherwise));
}

/// Adds `program` to the calling thread's filters (after PR_SET_NO_NEW_PRIVS, which an
/// unprivileged thread needs and which only takes rights away).
pub fn install(program: &Program) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with constant arguments changes only this thread's flags.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fprog` points at `program`, alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
