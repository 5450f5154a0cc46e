//! What a VM made from an image boots: a guest kernel (by default Debian's cloud kernel, unpacked from its
//! package into vesseld's cache, never installed on the host), an initramfs made for that kernel with
//! vessel-agent as its init ([`initramfs`]), the image's read-only base disk (built once per image, shared
//! by all its VMs) and each instance's own writable disk ([`disks`]).

pub mod debian;
pub mod disks;
pub mod initramfs;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("The guest kernel has no module {0} (neither built in nor in its modules directory)")]
    Module(String),
    #[error("Cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("Cannot {what}: {why}")]
    Tool { what: String, why: String },
    #[error(
        "{0} is not a static executable: the guest's init must be (build vessel-agent with \
         RUSTFLAGS='-C target-feature=+crt-static' --target x86_64-unknown-linux-gnu)"
    )]
    DynamicAgent(PathBuf),
    #[error("Cannot build the disk of image {image}: {why}")]
    Disk { image: String, why: String },
}

/// A kernel and the initramfs vessel made for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub version: String,
}

/// Whether the ELF file at `path` asks for a program interpreter (is dynamically linked).
pub fn is_dynamic(path: &Path) -> std::io::Result<bool> {
    let data = std::fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 64-bit ELF file");
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return Err(bad());
    }
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(bad)? as usize;
    let phnum = u16_at(0x38).ok_or_else(bad)? as usize;
    const PT_INTERP: u32 = 3;
    Ok((0..phnum).any(|i| {
        data.get(phoff + i * phentsize..phoff + i * phentsize + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == PT_INTERP)
    }))
}

/// The initramfs for the kernel unpacked at `kernel_root` (its `lib/modules/VERSION`), with `agent`;
/// made once per kernel and agent (named by the agent's digest) and kept beside the kernel.
pub fn initramfs_for(kernel_root: &Path, version: &str, agent: &Path) -> Result<PathBuf, BootError> {
    use sha2::Digest;
    if is_dynamic(agent).map_err(|source| BootError::Io {
        path: agent.to_path_buf(),
        source,
    })? {
        return Err(BootError::DynamicAgent(agent.to_path_buf()));
    }
    let bytes = std::fs::read(agent).map_err(|source| BootError::Io {
        path: agent.to_path_buf(),
        source,
    })?;
    let digest = sha2::Sha256::digest(&bytes);
    let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let out = kernel_root.join(format!("vessel-initramfs-{version}-{tag}.img"));
    if out.exists() {
        return Ok(out);
    }
    let mdir = kernel_root.join("lib/modules").join(version);
    let read = |name: &str| std::fs::read_to_string(mdir.join(name)).unwrap_or_default();
    let order = initramfs::load_order(
        &read("modules.dep"),
        &read("modules.builtin"),
        initramfs::GUEST_MODULES,
        initramfs::OPTIONAL_MODULES,
    )?;
    initramfs::write(agent, &mdir, &order, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dynamic_executable_is_told_from_a_static_one() {
        // This test binary is linked as the workspace builds it (dynamically, unless built static).
        let me = std::env::current_exe().unwrap();
        assert!(super::is_dynamic(&me).is_ok());
        assert!(super::is_dynamic(std::path::Path::new("/bin/sh")).unwrap());
        assert!(super::is_dynamic(std::path::Path::new("/etc/hostname")).is_err());
    }
}
