//! cgroup v2 device access control: the rules compiled into a BPF_PROG_TYPE_CGROUP_DEVICE program attached to
//! the cgroup directory.
//!
//! The program sees a `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }` where the low 16
//! bits of `access_type` are the device type (BPF_DEVCG_DEV_BLOCK = 1, BPF_DEVCG_DEV_CHAR = 2) and the high 16
//! bits the requested access (MKNOD = 1, READ = 2, WRITE = 4); it returns 1 to allow and 0 to deny.
//!
//! Compilation keeps the v1 meaning of a rule list (start from "deny all"; per access bit the last matching rule
//! wins): the rules are emitted last to first, with a register holding the requested bits not yet granted. A
//! matching allow rule clears the bits it grants and allows once none is left; a matching deny rule denies if it
//! names a bit still wanted. Falling off the end denies. A rule that matches everything ends the program with its
//! verdict; the rules before it are dead and not emitted.
//!
//! Register use: r2 = device type, r3 = wanted access bits, r4 = major, r5 = minor, r1 = scratch (after the
//! context fields are loaded).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::device_rules::{DevKind, DeviceRule, ACC_ALL};
use super::error::CgroupError;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src register in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (class | operation | source), from linux/bpf_common.h and linux/bpf.h.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const DEV_BLOCK: i32 = 1; // BPF_DEVCG_DEV_BLOCK
const DEV_CHAR: i32 = 2; // BPF_DEVCG_DEV_CHAR

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// Compiles checked rules (in spec order) into a device filter program.
pub(crate) fn compile(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),       // r2 = ctx->access_type
        insn(ALU32_AND_K, R2, 0, 0, 0xffff), // r2 &= 0xffff: device type
        insn(LDX_MEM_W, R3, R1, 0, 0),       // r3 = ctx->access_type
        insn(ALU32_RSH_K, R3, 0, 0, 16),     // r3 >>= 16: wanted access bits
        insn(LDX_MEM_W, R4, R1, 4, 0),       // r4 = ctx->major
        insn(LDX_MEM_W, R5, R1, 8, 0),       // r5 = ctx->minor
    ];
    for rule in rules.iter().rev() {
        if rule.is_total() {
            // Decides every request (the kernel always asks for at least one access bit, and no bit is granted
            // yet, or a later allow rule would have returned): nothing before it in the list can matter.
            prog.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow)));
            prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
            return prog;
        }
        prog.extend(rule_block(rule));
    }
    prog.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

/// The instructions of one rule. Every conditional jump leaves the block, so its offset is "to the end".
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    // Jumps to the next block are emitted with a placeholder and patched below.
    const NEXT: i16 = i16::MIN;
    let mut b = Vec::new();
    match rule.kind {
        DevKind::All => {}
        DevKind::Block => b.push(insn(JMP_JNE_K, R2, 0, NEXT, DEV_BLOCK)),
        DevKind::Char => b.push(insn(JMP_JNE_K, R2, 0, NEXT, DEV_CHAR)),
    }
    if let Some(major) = rule.major {
        b.push(insn(JMP_JNE_K, R4, 0, NEXT, major as i32));
    }
    if let Some(minor) = rule.minor {
        b.push(insn(JMP_JNE_K, R5, 0, NEXT, minor as i32));
    }
    let access = i32::from(rule.access);
    if rule.allow {
        b.push(insn(ALU32_AND_K, R3, 0, 0, i32::from(!rule.access & ACC_ALL))); // grant this rule's bits
        b.push(insn(JMP_JNE_K, R3, 0, NEXT, 0)); // some bits still wanted: ask earlier rules
        b.push(insn(ALU64_MOV_K, R0, 0, 0, 1));
    } else {
        b.push(insn(ALU32_MOV_X, R1, R3, 0, 0));
        b.push(insn(ALU32_AND_K, R1, 0, 0, access)); // wanted bits this rule denies
        b.push(insn(JMP_JEQ_K, R1, 0, NEXT, 0)); // none: ask earlier rules
        b.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    }
    b.push(insn(JMP_EXIT, 0, 0, 0, 0));
    let len = b.len();
    for (i, ins) in b.iter_mut().enumerate() {
        if ins.off == NEXT {
            ins.off = (len - i - 1) as i16;
        }
    }
    b
}

// bpf(2) commands and constants, from linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The BPF_PROG_LOAD part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The BPF_PROG_ATTACH / BPF_PROG_DETACH part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The BPF_PROG_QUERY part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// The BPF_PROG_GET_FD_BY_ID part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Calls bpf(2) with `attr`, returning its non-negative result.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] prefix of `union bpf_attr` for `cmd`, and its exact
    // size is passed, so the kernel reads and writes only inside it; pointers stored in it (instructions, license,
    // log buffer, id array) are kept alive by the callers for the duration of this call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a file descriptor returned by bpf(2).
fn owned_fd(ret: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) returned a new file descriptor that nothing else owns; it fits in a c_int.
    unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) }
}

/// Loads a device filter program, returning its fd. On failure the kernel verifier's log is part of the error.
pub(crate) fn load(insns: &[Insn], target: &Path) -> Result<OwnedFd, CgroupError> {
    let license = b"Apache-2.0\0";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"vessel_dev");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned_fd(fd)),
        Err(first) => {
            // Load again with the verifier log on, to say why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
                return Ok(owned_fd(fd));
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).trim().replace('\n', "; ");
            let log = if text.is_empty() {
                String::new()
            } else {
                format!(" (verifier: {text})")
            };
            Err(CgroupError::Bpf {
                op: "program load",
                target: target.to_path_buf(),
                cause: first,
                log,
            })
        }
    }
}

/// Opens a cgroup directory for attaching programs to it.
fn open_dir(dir: &Path) -> Result<File, CgroupError> {
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(|cause| CgroupError::Read {
            path: dir.to_path_buf(),
            cause,
        })
}

/// The ids of the device programs attached to the cgroup.
fn query(cgroup: &File, dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = QueryAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && attr.prog_cnt as usize > ids.len() => {
                ids = vec![0; attr.prog_cnt as usize];
            }
            Err(cause) => {
                return Err(CgroupError::Bpf {
                    op: "program query",
                    target: dir.to_path_buf(),
                    cause,
                    log: String::new(),
                })
            }
        }
    }
}

/// Replaces the cgroup's device filter with one compiled from `rules`: the new program is attached first (with
/// BPF_F_ALLOW_MULTI, so both run and a request needs both to allow it) and the old ones are detached after, so
/// there is never a moment without a filter.
pub(crate) fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let prog = load(&compile(rules), dir)?;
    let cgroup = open_dir(dir)?;
    let old = query(&cgroup, dir)?;
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|cause| {
        let log = if cause.raw_os_error() == Some(libc::EPERM) && !old.is_empty() {
            " (a device program attached without BPF_F_ALLOW_MULTI is in the way)".to_string()
        } else {
            String::new()
        };
        CgroupError::Bpf {
            op: "program attach",
            target: dir.to_path_buf(),
            cause,
            log,
        }
    })?;
    for id in old {
        let mut by_id = GetFdByIdAttr {
            prog_id: id,
            ..Default::default()
        };
        let old_prog = match bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id) {
            Ok(fd) => owned_fd(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(cause) => {
                let log = format!(" (old program id {id})");
                return Err(CgroupError::Bpf {
                    op: "program lookup",
                    target: dir.to_path_buf(),
                    cause,
                    log,
                });
            }
        };
        let mut detach = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: old_prog.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        match bpf(BPF_PROG_DETACH, &mut detach) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(cause) => {
                let log = format!(" (old program id {id})");
                return Err(CgroupError::Bpf {
                    op: "program detach",
                    target: dir.to_path_buf(),
                    cause,
                    log,
                });
            }
        }
    }
    Ok(())
}

/// How many device programs are attached to the cgroup directory.
#[cfg(test)]
pub(crate) fn attached_count(dir: &Path) -> Result<usize, CgroupError> {
    let cgroup = open_dir(dir)?;
    Ok(query(&cgroup, dir)?.len())
}

#[cfg(test)]
#[path = "v2_devices_tests.rs"]
mod tests;
