//! The agent as the PID 1 of a VM made from an image, started by the kernel from vessel's initramfs:
//! the kernel's filesystems, the virtio modules the initramfs carries, then the instance's root (the image's
//! read-only disk under its own writable disk, joined by overlayfs), moved to `/`. PID 1 then only reaps
//! orphans; a child serves the host on vsock, and the guest powers off when the main process has ended or
//! that server dies.
//!
//! The kernel command line names the disks: `vessel.root=/dev/vda` (the image, read-only ext4) and
//! `vessel.data=/dev/vdb` (the instance's writable ext4; without it, changes live in memory).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use crate::proto::GuestSetup;
use crate::server::{Listen, OnMainExit};

/// How long a disk may take to appear after its driver loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot mount {what} on {target}: {source}")]
    Mount {
        what: String,
        target: String,
        source: nix::Error,
    },
    #[error("cannot load module {path}: {source}")]
    Module { path: String, source: std::io::Error },
    #[error("{0} did not appear")]
    NoDevice(String),
    #[error("cannot {0}: {1}")]
    Os(&'static str, std::io::Error),
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    let _ = std::fs::create_dir_all(target);
    mount(Some(source), target, Some(fstype), flags, data).map_err(|source_err| InitError::Mount {
        what: format!("{fstype} {source}"),
        target: target.into(),
        source: source_err,
    })
}

/// `key=value` of the kernel command line.
fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(String::from))
}

/// The modules the initramfs carries, in the order its builder wrote to /modules.order.
fn load_modules() -> Result<(), InitError> {
    let order = std::fs::read_to_string("/modules.order").unwrap_or_default();
    for rel in order.lines().filter(|l| !l.is_empty()) {
        let path = Path::new("/lib/modules").join(rel);
        let f = std::fs::File::open(&path).map_err(|source| InitError::Module {
            path: path.display().to_string(),
            source,
        })?;
        // SAFETY: finit_module reads the module from a descriptor we own, with empty parameters.
        let r = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                c"".as_ptr(),
                0,
            )
        };
        let err = std::io::Error::last_os_error();
        // Built into this kernel, or loaded already: fine.
        if r < 0 && err.raw_os_error() != Some(libc::EEXIST) {
            return Err(InitError::Module {
                path: path.display().to_string(),
                source: err,
            });
        }
    }
    Ok(())
}

fn wait_for(device: &str) -> Result<(), InitError> {
    let deadline = Instant::now() + DEVICE_WAIT;
    while !Path::new(device).exists() {
        if Instant::now() > deadline {
            return Err(InitError::NoDevice(device.into()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Everything before the server: filesystems, modules, the root.
fn prepare() -> Result<(), InitError> {
    let none = MsFlags::empty();
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", quiet, None)?;
    mount_fs("sysfs", "/sys", "sysfs", quiet, None)?;
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, None)?;
    load_modules()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let root = cmdline_value(&cmdline, "vessel.root").unwrap_or_else(|| "/dev/vda".into());
    wait_for(&root)?;
    mount_fs(&root, "/mnt/lower", "ext4", MsFlags::MS_RDONLY, None)?;
    match cmdline_value(&cmdline, "vessel.data") {
        Some(data) => {
            wait_for(&data)?;
            mount_fs(&data, "/mnt/data", "ext4", none, None)?;
        }
        None => mount_fs("tmpfs", "/mnt/data", "tmpfs", none, Some("mode=0755"))?,
    }
    for d in ["/mnt/data/upper", "/mnt/data/work"] {
        std::fs::create_dir_all(d).map_err(|e| InitError::Os("create the overlay's directories", e))?;
    }
    mount_fs(
        "overlay",
        "/mnt/root",
        "overlay",
        none,
        Some("lowerdir=/mnt/lower,upperdir=/mnt/data/upper,workdir=/mnt/data/work"),
    )?;
    // The kernel's filesystems move into the new root, which then becomes `/`.
    for d in ["/dev", "/proc", "/sys"] {
        let target = format!("/mnt/root{d}");
        let _ = std::fs::create_dir_all(&target);
        mount(
            Some(d),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|source| InitError::Mount {
            what: d.into(),
            target: target.clone(),
            source,
        })?;
    }
    std::env::set_current_dir("/mnt/root").map_err(|e| InitError::Os("enter the root", e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|source| {
        InitError::Mount {
            what: "the instance's root".into(),
            target: "/".into(),
            source,
        }
    })?;
    nix::unistd::chroot(".").map_err(|e| InitError::Os("chroot into the root", e.into()))?;
    std::env::set_current_dir("/").map_err(|e| InitError::Os("enter /", e))?;
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("ptmxmode=0666,newinstance"),
    )?;
    mount_fs("tmpfs", "/dev/shm", "tmpfs", quiet, Some("mode=1777"))?;
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    Ok(())
}

/// The guest's hostname, interfaces (found by MAC) and files, from the main session's setup.
pub fn apply_setup(s: &GuestSetup) -> Result<(), String> {
    if !s.hostname.is_empty() {
        nix::unistd::sethostname(&s.hostname).map_err(|e| format!("hostname: {e}"))?;
    }
    crate::network::configure(&s.interfaces)?;
    for (path, content) in &s.files {
        if let Some(dir) = Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A symlink (Debian's /etc/resolv.conf may be one) is replaced, not followed out of place.
        let _ = std::fs::remove_file(path);
        std::fs::write(path, content).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// Sync and power off (ACPI): the VMM exits.
pub fn power_off() -> ! {
    nix::unistd::sync();
    // SAFETY: reboot with a command constant only; it returns only on failure.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    // Only reached without CAP_SYS_BOOT, i.e. not as a guest's PID 1.
    std::process::exit(1)
}

/// PID 1's life: prepare, fork the server, reap until it is gone, power off.
pub fn run_as_init() -> ! {
    if let Err(e) = prepare() {
        eprintln!("vessel-agent: {e}");
        power_off();
    }
    // SAFETY: fork while single-threaded (nothing has started a thread yet).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let listen = Listen::Vsock(crate::proto::PORT);
            if let Err(e) = crate::server::serve(&listen, OnMainExit::PowerOff, apply_setup) {
                eprintln!(
                    "vessel-agent: cannot serve on vsock port {}: {e}",
                    crate::proto::PORT
                );
            }
            power_off();
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => loop {
            match nix::sys::wait::waitpid(None, None) {
                Ok(status) if status.pid() == Some(child) => {
                    eprintln!("vessel-agent: the server ended ({status:?})");
                    power_off();
                }
                Err(nix::errno::Errno::ECHILD) => power_off(),
                _ => {}
            }
        },
        Err(e) => {
            eprintln!("vessel-agent: fork: {e}");
            power_off();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cmdline_value;

    #[test]
    fn disks_are_named_on_the_kernel_command_line() {
        let c = "console=ttyS0 vessel.root=/dev/vda vessel.data=/dev/vdb quiet";
        assert_eq!(cmdline_value(c, "vessel.root").as_deref(), Some("/dev/vda"));
        assert_eq!(cmdline_value(c, "vessel.data").as_deref(), Some("/dev/vdb"));
        assert_eq!(cmdline_value(c, "vessel.rootx"), None);
        assert_eq!(cmdline_value("vessel.root", "vessel.root"), None);
    }
}
