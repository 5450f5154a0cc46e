//! Debian's cloud kernel for VMs made from images: the package `linux-image-cloud-amd64` depends on,
//! downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into vesseld's cache (never installed
//! into the host's /boot), with `depmod` run on the unpacked tree so its modules' dependencies are known.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BootError, GuestKernel};

/// The meta-package whose dependency is the kernel vessel boots by default.
pub const DEFAULT_PACKAGE: &str = "linux-image-cloud-amd64";

fn tool(what: &str, cmd: &mut Command) -> Result<String, BootError> {
    let out = cmd.output().map_err(|e| BootError::Tool {
        what: what.into(),
        why: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(BootError::Tool {
            what: what.into(),
            why: String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
                .to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The versioned kernel package `meta` depends on (e.g. linux-image-6.1.0-57-cloud-amd64).
fn resolve(meta: &str) -> Result<String, BootError> {
    let depends = tool(
        &format!("ask apt for {meta}"),
        Command::new("apt-cache").args(["depends", meta]),
    )?;
    depends
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Depends: linux-image-")
                .map(|p| format!("linux-image-{p}"))
        })
        .ok_or_else(|| BootError::Tool {
            what: format!("find the kernel package of {meta}"),
            why: "apt knows no such package (apt-get update?)".into(),
        })
}

/// The kernel unpacked at `dir`: its vmlinuz and version.
fn unpacked(dir: &Path) -> Option<(PathBuf, String)> {
    let modules = std::fs::read_dir(dir.join("lib/modules")).ok()?;
    let version = modules
        .flatten()
        .next()?
        .file_name()
        .to_string_lossy()
        .into_owned();
    let kernel = dir.join("boot").join(format!("vmlinuz-{version}"));
    kernel.exists().then_some((kernel, version))
}

/// The newest cloud kernel unpacked in `cache` (by its package's name).
fn cached(cache: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.ends_with("-cloud-amd64"))
        })
        .filter(|p| unpacked(p).is_some())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// The default kernel in `cache` (fetched and unpacked on first use) with its initramfs for `agent`.
pub fn default_kernel(cache: &Path, agent: &Path) -> Result<GuestKernel, BootError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BootError::Io { path, source }
    };
    // A kernel in the cache is used as it is: apt is asked only when there is none (remove the cache's
    // directory to move to a newer one).
    if let Some(dir) = cached(cache) {
        if let Some((kernel, version)) = unpacked(&dir) {
            let initrd = super::initramfs_for(&dir, &version, agent)?;
            return Ok(GuestKernel {
                kernel,
                initrd,
                version,
            });
        }
    }
    let package = resolve(DEFAULT_PACKAGE)?;
    let dir = cache.join(&package);
    if unpacked(&dir).is_none() {
        let work = cache.join(format!("{package}.partial"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.join("deb")).map_err(io(&work))?;
        tool(
            &format!("download {package}"),
            Command::new("apt-get")
                .args(["download", "-qq", &package])
                .current_dir(work.join("deb")),
        )?;
        let deb = std::fs::read_dir(work.join("deb"))
            .map_err(io(&work))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| BootError::Tool {
                what: format!("download {package}"),
                why: "apt-get left no .deb".into(),
            })?;
        let tree = work.join("tree");
        tool(
            &format!("unpack {}", deb.display()),
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
        )?;
        let (_, version) = unpacked(&tree).ok_or_else(|| BootError::Tool {
            what: format!("unpack {package}"),
            why: "no kernel in the package".into(),
        })?;
        tool(
            "run depmod (install kmod)",
            Command::new("depmod").arg("-b").arg(&tree).arg(&version),
        )?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tree, &dir).map_err(io(&dir))?;
        let _ = std::fs::remove_dir_all(&work);
    }
    let (kernel, version) = unpacked(&dir).ok_or_else(|| BootError::Tool {
        what: format!("use {package}"),
        why: format!("{} holds no kernel", dir.display()),
    })?;
    let initrd = super::initramfs_for(&dir, &version, agent)?;
    Ok(GuestKernel {
        kernel,
        initrd,
        version,
    })
}
