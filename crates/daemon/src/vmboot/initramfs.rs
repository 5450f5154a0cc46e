//! The initramfs of a VM made from an image: vessel-agent as `/init`, the kernel modules the guest needs
//! before its root is mounted (with what they depend on, in load order, as `/modules.order`), and
//! `/dev/console`. Written as a gzip'd cpio "newc" archive, so no file or device node is made on the host.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::BootError;

/// What vessel's guests need of a kernel: the virtio-mmio transport vessel-vmm announces, disks, NICs,
/// entropy, vsock to the host, overlayfs for the instance's root.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "vmw_vsock_virtio_transport",
    "overlay",
];
/// Loaded when the kernel has them as modules (ext4 and its checksums are built into Debian's cloud kernel,
/// modules of its standard one; entropy is welcome, not needed).
pub const OPTIONAL_MODULES: &[&str] = &["crc32c_generic", "ext4", "virtio_rng"];

/// A module's name as the kernel knows it: the file name without `.ko[.xz|.zst|.gz]`, `-` as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The module files (paths relative to the modules directory) to load for `wanted`, each after what it
/// depends on, from `modules.dep`; names in `modules.builtin` need nothing. A wanted module that is
/// neither is an error unless `optional`.
pub fn load_order(
    modules_dep: &str,
    builtin: &str,
    wanted: &[&str],
    optional: &[&str],
) -> Result<Vec<String>, BootError> {
    let deps: Vec<(String, String, Vec<String>)> = modules_dep
        .lines()
        .filter_map(|l| {
            let (path, rest) = l.split_once(':')?;
            Some((
                module_name(path),
                path.to_string(),
                rest.split_whitespace().map(String::from).collect(),
            ))
        })
        .collect();
    let builtin: HashSet<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit(
        name: &str,
        deps: &[(String, String, Vec<String>)],
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> bool {
        if !seen.insert(name.to_string()) {
            return true;
        }
        let Some((_, path, needs)) = deps.iter().find(|(n, _, _)| n == name) else {
            return false;
        };
        for d in needs {
            visit(&module_name(d), deps, seen, order);
        }
        order.push(path.clone());
        true
    }
    for (m, required) in wanted
        .iter()
        .map(|m| (*m, true))
        .chain(optional.iter().map(|m| (*m, false)))
    {
        if builtin.contains(m) {
            continue;
        }
        if !visit(m, &deps, &mut seen, &mut order) && required {
            return Err(BootError::Module(m.to_string()));
        }
    }
    Ok(order)
}

/// A cpio "newc" archive being written.
struct Cpio<W: Write> {
    out: W,
    ino: u32,
}

impl<W: Write> Cpio<W> {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) -> std::io::Result<()> {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, len: usize) -> std::io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..n])
    }

    fn dir(&mut self, name: &str) -> std::io::Result<()> {
        self.entry(name, 0o040755, &[], (0, 0))
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.entry(name, 0o100000 | mode, data, (0, 0))
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, &[], (0, 0))?;
        Ok(self.out)
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BootError + '_ {
    move |source| BootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the initramfs to `out` (through a temporary file, so `out` only ever holds a whole one):
/// `agent` as /init, the modules in `order` (relative to `modules_dir`) and their order.
pub fn write(agent: &Path, modules_dir: &Path, order: &[String], out: &Path) -> Result<(), BootError> {
    let tmp = out.with_extension("tmp");
    match write_archive(agent, modules_dir, order, &tmp) {
        Ok(()) => std::fs::rename(&tmp, out).map_err(io_err(out)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_archive(agent: &Path, modules_dir: &Path, order: &[String], tmp: &Path) -> Result<(), BootError> {
    let agent_bytes = std::fs::read(agent).map_err(io_err(agent))?;
    let file = std::fs::File::create(tmp).map_err(io_err(tmp))?;
    let gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
    let mut cpio = Cpio { out: gz, ino: 0 };
    let w = io_err(tmp);
    for d in ["dev", "proc", "sys", "mnt", "lib", "lib/modules"] {
        cpio.dir(d).map_err(&w)?;
    }
    // The kernel opens /dev/console for /init before anything is mounted.
    cpio.entry("dev/console", 0o020600, &[], (5, 1)).map_err(&w)?;
    cpio.file("init", 0o755, &agent_bytes).map_err(&w)?;
    let mut names = Vec::new();
    for rel in order {
        let src = modules_dir.join(rel);
        let data = std::fs::read(&src).map_err(io_err(&src))?;
        let name = rel.rsplit('/').next().unwrap_or(rel).to_string();
        cpio.file(&format!("lib/modules/{name}"), 0o644, &data)
            .map_err(&w)?;
        names.push(name);
    }
    let mut list = names.join("\n");
    list.push('\n');
    cpio.file("modules.order", 0o644, list.as_bytes()).map_err(&w)?;
    let gz = cpio.finish().map_err(&w)?;
    let mut buffered = gz.finish().map_err(&w)?;
    buffered.flush().map_err(&w)?;
    buffered.get_ref().sync_all().map_err(&w)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/fs/overlayfs/overlay.ko:
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
";

    #[test]
    fn modules_come_after_what_they_depend_on_and_built_ins_are_skipped() {
        let order = load_order(
            DEP,
            "kernel/drivers/net/virtio_net.ko\nkernel/fs/ext4/ext4.ko\n",
            GUEST_MODULES,
            OPTIONAL_MODULES,
        )
        .unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "virtio_ring",
                "virtio",
                "virtio_mmio",
                "virtio_blk",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
                "overlay"
            ]
        );
        let err = load_order(DEP, "", &["virtio_net"], &[]).unwrap_err();
        assert!(err.to_string().contains("virtio_net"), "{err}");
    }

    #[test]
    fn the_archive_is_a_newc_cpio_the_kernel_can_read() {
        let dir = std::env::temp_dir().join(format!("vessel-initramfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mods/kernel")).unwrap();
        std::fs::write(dir.join("agent"), b"\x7fELF agent").unwrap();
        std::fs::write(dir.join("mods/kernel/a.ko"), b"module a").unwrap();
        let out = dir.join("initrd.img");
        write(
            &dir.join("agent"),
            &dir.join("mods"),
            &["kernel/a.ko".into()],
            &out,
        )
        .unwrap();
        // cpio(1) lists what the kernel would unpack.
        let listed = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("zcat {} | cpio -it --quiet", out.display()))
            .output()
            .expect("sh, zcat and cpio");
        let names = String::from_utf8_lossy(&listed.stdout);
        for n in ["init", "dev/console", "lib/modules/a.ko", "modules.order"] {
            assert!(names.lines().any(|l| l == n), "{n} in {names}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
