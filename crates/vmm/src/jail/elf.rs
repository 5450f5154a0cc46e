//! What a dynamically linked exec file needs in the jail: its ELF interpreter and the shared
//! libraries it names (DT_NEEDED), transitively, found where the host's dynamic loader finds
//! them. A static binary (the way vessel-vmm ships) needs nothing. x86-64 ELF64 only.

use std::path::{Path, PathBuf};

/// Where libraries are looked for, in the order the loader's default path has them.
const LIBRARY_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn c_str(b: &[u8], at: usize) -> Option<String> {
    let rest = b.get(at..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

/// The interpreter and needed library names of an ELF64 image (None: not one we can read).
fn dynamic_needs(b: &[u8]) -> Option<(Option<String>, Vec<String>)> {
    if b.get(..4)? != b"\x7fELF" || *b.get(4)? != 2 || *b.get(5)? != 1 {
        return None;
    }
    let (phoff, phentsize, phnum) = (
        u64_at(b, 0x20)? as usize,
        u16_at(b, 0x36)? as usize,
        u16_at(b, 0x38)?,
    );
    let mut interp = None;
    let mut dynamic = None;
    let mut loads = Vec::new();
    for i in 0..usize::from(phnum) {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let (kind, offset, vaddr, filesz) = (
            u32_at(b, ph)?,
            u64_at(b, ph + 8)?,
            u64_at(b, ph + 16)?,
            u64_at(b, ph + 32)?,
        );
        match kind {
            PT_INTERP => interp = c_str(b, offset as usize),
            PT_DYNAMIC => dynamic = Some((offset as usize, filesz as usize)),
            PT_LOAD => loads.push((vaddr, offset, filesz)),
            _ => {}
        }
    }
    let Some((dyn_off, dyn_len)) = dynamic else {
        return Some((interp, Vec::new()));
    };
    let mut strtab = None;
    let mut needed = Vec::new();
    for entry in (dyn_off..dyn_off.checked_add(dyn_len)?).step_by(16) {
        let (tag, value) = (u64_at(b, entry)?, u64_at(b, entry + 8)?);
        match tag {
            0 => break,
            DT_NEEDED => needed.push(value),
            DT_STRTAB => strtab = Some(value),
            _ => {}
        }
    }
    // DT_STRTAB is an address: map it to a file offset through the PT_LOAD segments.
    let strtab = strtab?;
    let (vaddr, offset, _) = loads
        .iter()
        .find(|(vaddr, _, filesz)| strtab >= *vaddr && strtab < vaddr + filesz)?;
    let base = (strtab - vaddr + offset) as usize;
    let names = needed
        .into_iter()
        .filter_map(|at| c_str(b, base + at as usize))
        .collect();
    Some((interp, names))
}

fn find_library(name: &str) -> Option<PathBuf> {
    LIBRARY_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// The files (absolute host paths, to be placed at the same paths in the jail) that `exec`
/// needs to run; empty for a static binary. A library that cannot be found is named in the
/// error.
pub(super) fn runtime_files(exec: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut pending = vec![exec.to_path_buf()];
    let mut first = true;
    while let Some(path) = pending.pop() {
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let Some((interp, needed)) = dynamic_needs(&bytes) else {
            if first {
                return Err("not an x86-64 ELF executable".into());
            }
            continue;
        };
        first = false;
        let interp = interp.map(PathBuf::from);
        let libs = needed.iter().map(|name| {
            find_library(name)
                .ok_or_else(|| format!("needs {name}, which is in none of {}", LIBRARY_DIRS.join(", ")))
        });
        for found in interp.into_iter().map(Ok).chain(libs) {
            let found = found?;
            if !files.contains(&found) {
                files.push(found.clone());
                pending.push(found);
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_needs_its_loader_and_libc() {
        let files = runtime_files(Path::new("/bin/true")).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("ld-linux")), "{names:?}");
        assert!(names.iter().any(|n| n == "libc.so.6"), "{names:?}");
    }

    #[test]
    fn non_elf_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("vessel-elf-test-{}", std::process::id()));
        std::fs::write(&dir, b"#!/bin/sh\n").unwrap();
        let err = runtime_files(&dir).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(err.contains("ELF"), "{err}");
    }
}
