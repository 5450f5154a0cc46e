//! Tests of the device filter compiler: a small interpreter runs the generated programs against a reference
//! implementation of the rule semantics, and (as root) the kernel verifier loads them.

use super::*;
use crate::cgroups::device_rules::{ACC_MKNOD, ACC_READ, ACC_WRITE};

/// Runs a compiled program on one request, the way the kernel would, for the opcodes `compile` emits.
fn run(prog: &[Insn], dev_type: u32, access: u32, major: u32, minor: u32) -> u64 {
    let ctx = [dev_type | (access << 16), major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    for _ in 0..10_000 {
        let i = prog
            .get(pc)
            .unwrap_or_else(|| panic!("pc {pc} ran off the program"));
        let dst = (i.regs & 0xf) as usize;
        let src = (i.regs >> 4) as usize;
        let imm64 = i.imm as i64 as u64;
        let mut next = pc + 1;
        match i.code {
            LDX_MEM_W => {
                assert_eq!(src, 1, "loads only from the context");
                r[dst] = ctx[(i.off / 4) as usize] as u64;
            }
            ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
            ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
            ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
            ALU64_MOV_K => r[dst] = imm64,
            JMP_JEQ_K | JMP_JNE_K => {
                let taken = (r[dst] == imm64) == (i.code == JMP_JEQ_K);
                if taken {
                    next = (pc as i64 + 1 + i.off as i64) as usize;
                }
            }
            JMP_EXIT => return r[0],
            other => panic!("unexpected opcode {other:#x}"),
        }
        pc = next;
    }
    panic!("program did not terminate")
}

/// The intended semantics: start denied; per access bit the last matching rule naming it decides.
fn reference(rules: &[DeviceRule], dev_type: u32, access: u32, major: u32, minor: u32) -> u64 {
    let matches = |r: &DeviceRule| {
        let kind_ok = match r.kind {
            DevKind::All => true,
            DevKind::Block => dev_type == DEV_BLOCK as u32,
            DevKind::Char => dev_type == DEV_CHAR as u32,
        };
        kind_ok
            && (r.major.is_none() || r.major == Some(major))
            && (r.minor.is_none() || r.minor == Some(minor))
    };
    for bit in [ACC_MKNOD, ACC_READ, ACC_WRITE] {
        if access & bit as u32 == 0 {
            continue;
        }
        let allowed = rules
            .iter()
            .rev()
            .find(|r| matches(r) && r.access & bit != 0)
            .is_some_and(|r| r.allow);
        if !allowed {
            return 0;
        }
    }
    1
}

fn rule(allow: bool, kind: DevKind, major: Option<u32>, minor: Option<u32>, access: u8) -> DeviceRule {
    DeviceRule {
        allow,
        kind,
        major,
        minor,
        access,
    }
}

fn check_against_reference(rules: &[DeviceRule]) {
    let prog = compile(rules);
    for dev_type in [DEV_BLOCK as u32, DEV_CHAR as u32] {
        for major in [1, 5, 8, 136] {
            for minor in [0, 3, 5] {
                for access in 1..=7 {
                    assert_eq!(
                        run(&prog, dev_type, access, major, minor),
                        reference(rules, dev_type, access, major, minor),
                        "type {dev_type} {major}:{minor} access {access:#b} with rules {rules:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn empty_rule_list_denies_everything() {
    let prog = compile(&[]);
    assert_eq!(prog.len(), 8);
    assert_eq!(run(&prog, DEV_CHAR as u32, ACC_READ as u32, 1, 3), 0);
}

#[test]
fn exact_instructions_for_one_char_rule() {
    let prog = compile(&[rule(true, DevKind::Char, Some(1), Some(3), ACC_READ | ACC_WRITE)]);
    let expected = [
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
        insn(JMP_JNE_K, R2, 0, 6, DEV_CHAR),
        insn(JMP_JNE_K, R4, 0, 5, 1),
        insn(JMP_JNE_K, R5, 0, 4, 3),
        insn(ALU32_AND_K, R3, 0, 0, ACC_MKNOD as i32),
        insn(JMP_JNE_K, R3, 0, 2, 0),
        insn(ALU64_MOV_K, R0, 0, 0, 1),
        insn(JMP_EXIT, 0, 0, 0, 0),
        insn(ALU64_MOV_K, R0, 0, 0, 0),
        insn(JMP_EXIT, 0, 0, 0, 0),
    ];
    assert_eq!(prog, expected);
    assert_eq!(
        insn(LDX_MEM_W, R2, R1, 0, 0).regs,
        0x12,
        "src in the high nibble, dst in the low one"
    );
}

#[test]
fn rules_before_a_total_rule_are_not_emitted() {
    let allow_all = rule(true, DevKind::All, None, None, ACC_ALL);
    let deny_null = rule(false, DevKind::Char, Some(1), Some(3), ACC_ALL);
    let prog = compile(&[deny_null, allow_all]);
    assert_eq!(
        prog.len(),
        6 + 2,
        "header + an unconditional allow only: {prog:?}"
    );
    assert_eq!(
        prog[6..],
        [insn(ALU64_MOV_K, R0, 0, 0, 1), insn(JMP_EXIT, 0, 0, 0, 0)]
    );
    assert_eq!(run(&prog, DEV_CHAR as u32, ACC_READ as u32, 1, 3), 1);

    let prog = compile(&[allow_all, deny_null]);
    assert_eq!(run(&prog, DEV_CHAR as u32, ACC_READ as u32, 1, 3), 0);
    assert_eq!(run(&prog, DEV_CHAR as u32, ACC_READ as u32, 1, 5), 1);
    assert_eq!(run(&prog, DEV_BLOCK as u32, ACC_WRITE as u32, 8, 0), 1);
}

#[test]
fn last_matching_rule_wins_per_access_bit() {
    use DevKind::*;
    let cases: Vec<Vec<DeviceRule>> = vec![
        // Docker-like: deny all, mknod anything, use of a few char devices.
        vec![
            rule(false, All, None, None, ACC_ALL),
            rule(true, Char, None, None, ACC_MKNOD),
            rule(true, Block, None, None, ACC_MKNOD),
            rule(true, Char, Some(1), Some(3), ACC_ALL),
            rule(true, Char, Some(136), None, ACC_READ | ACC_WRITE),
        ],
        // Access granted by two separate rules.
        vec![
            rule(true, Char, Some(1), None, ACC_READ),
            rule(true, Char, None, Some(3), ACC_WRITE),
        ],
        // A later partial deny carves bits out of an earlier wildcard allow.
        vec![
            rule(true, All, None, None, ACC_ALL),
            rule(false, Char, Some(1), None, ACC_WRITE),
        ],
        // An earlier deny is overridden by a later allow for the same bits only.
        vec![
            rule(false, Block, Some(8), None, ACC_READ | ACC_WRITE),
            rule(true, Block, None, Some(0), ACC_READ),
        ],
        // Type "a" with numbers.
        vec![rule(true, All, Some(5), None, ACC_READ | ACC_MKNOD)],
    ];
    for rules in &cases {
        check_against_reference(rules);
    }
}

#[test]
fn random_rule_lists_match_the_reference() {
    // A fixed linear congruential generator: reproducible, no dependency.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    for _ in 0..300 {
        let len = next(7) as usize;
        let rules: Vec<DeviceRule> = (0..len)
            .map(|_| {
                let kind = [DevKind::All, DevKind::Block, DevKind::Char][next(3) as usize];
                let major = [None, Some(1), Some(5), Some(8)][next(4) as usize];
                let minor = [None, Some(0), Some(3)][next(3) as usize];
                rule(next(2) == 0, kind, major, minor, next(7) as u8 + 1)
            })
            .collect();
        check_against_reference(&rules);
    }
}

#[test]
fn kernel_verifier_accepts_compiled_programs() {
    crate::cgroups::test_support::require_root("loading BPF_PROG_TYPE_CGROUP_DEVICE programs");
    use DevKind::*;
    let lists: Vec<Vec<DeviceRule>> = vec![
        vec![],
        vec![rule(true, All, None, None, ACC_ALL)],
        DeviceRule::from_oci_list(&crate::cgroups::default_device_rules()).unwrap(),
        vec![
            rule(false, All, None, None, ACC_ALL),
            rule(true, Char, Some(1), Some(3), ACC_READ),
            rule(false, Block, None, Some(7), ACC_WRITE | ACC_MKNOD),
            rule(true, All, Some(136), None, ACC_ALL),
        ],
    ];
    for rules in lists {
        let prog = compile(&rules);
        let fd = load(&prog, Path::new("(test)"))
            .unwrap_or_else(|e| panic!("the verifier rejected the program for {rules:?}: {e}"));
        assert!(fd.as_raw_fd() >= 0);
    }
}
