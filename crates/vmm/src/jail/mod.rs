//! vessel-jailer's work: start one VMM in a jail and clean up after it.
//!
//! The jailer (root) checks everything it was given, then builds the jail:
//! `<chroot-base>/<exec-name>/<id>/root` with the VMM binary (hard-linked, or copied across file
//! systems) and the device nodes it needs (`fs.rs`), and one cgroup per hierarchy holding a limit
//! (`cgroup.rs`); a dynamically linked binary also gets its loader and libraries (`elf.rs`;
//! vessel-vmm built static needs none). It then forks the jail's first process in a new PID namespace, which joins the
//! cgroups, enters a new mount namespace and a new (or the given) network namespace, pivots into
//! the jail's root, drops to the VM's uid and gid with no capabilities and no new privileges, and
//! runs as PID 1 there: it starts the VMM as PID 2, forwards termination signals to it and exits
//! with its status (`process.rs`). The jailer waits in the host's namespaces, forwards the same
//! signals, removes the cgroups and the files it made when the jail's PID 1 ends, and exits with
//! the VMM's status (128 + signal number when the VMM died of a signal).
//!
//! Files the VM needs (kernel, initrd, disks) are the caller's to place under the jail's root
//! before the start, with owners the VM's uid can use; the VMM's arguments name them as seen
//! from inside (`/vmlinux`, not `<chroot-base>/.../root/vmlinux`).

mod cgroup;
mod elf;
mod fs;
mod process;

pub use cgroup::CgroupError;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where jails go unless `--chroot-base` says otherwise.
pub const DEFAULT_CHROOT_BASE: &str = "/srv/vessel-jailer";
/// The cgroup (under each hierarchy's root) that holds one cgroup per jail (the container
/// runtime's are under `vessel`).
pub const DEFAULT_PARENT_CGROUP: &str = "vessel-vm";

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("Invalid jail id {0:?}: use 1 to 64 letters, digits, '-' or '_'")]
    BadId(String),
    #[error("Invalid --{flag} {value:?}: expected a number from 0 to 4294967294")]
    BadNumber { flag: &'static str, value: String },
    #[error("The exec file {path} is not usable: {reason}")]
    BadExecFile { path: PathBuf, reason: String },
    #[error("The chroot base {0} must be an absolute path")]
    RelativeBase(PathBuf),
    #[error("Invalid --cgroup {0:?}: expected CONTROLLER.FILE=VALUE, e.g. memory.max=256M or pids.max=64")]
    BadCgroupArg(String),
    #[error("Invalid parent cgroup {0:?}: use letters, digits, '-', '_' or '.'")]
    BadParentCgroup(String),
    #[error("The network namespace {path} cannot be used: {source}")]
    Netns { path: PathBuf, source: std::io::Error },
    #[error("Cannot {what} {path}: {source}")]
    Fs {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists and is not a directory the jailer made; refusing to use it")]
    Unsafe(PathBuf),
    #[error(
        "{0} already exists: is a VM with this id running? (vessel-jailer --remove cleans up after one)"
    )]
    InUse(PathBuf),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("Cannot {what}: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("The jail could not be entered: {0}")]
    Setup(String),
}

/// What to jail and how.
#[derive(Debug, Clone)]
pub struct JailConfig {
    pub id: String,
    pub exec_file: PathBuf,
    pub uid: String,
    pub gid: String,
    pub chroot_base: PathBuf,
    /// `CONTROLLER.FILE=VALUE` limits, written into the jail's cgroups in order.
    pub cgroups: Vec<String>,
    pub parent_cgroup: String,
    /// A network namespace to join (e.g. /var/run/netns/NAME); a new, empty one otherwise.
    pub netns: Option<PathBuf>,
    /// The VMM's arguments, with paths as seen inside the jail.
    pub vmm_args: Vec<OsString>,
}

/// A checked [`JailConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub id: String,
    pub exec_file: PathBuf,
    pub exec_name: String,
    pub uid: u32,
    pub gid: u32,
    pub chroot_base: PathBuf,
    pub limits: Vec<(String, String)>,
    pub parent_cgroup: String,
    pub netns: Option<PathBuf>,
    pub vmm_args: Vec<OsString>,
    /// What a dynamically linked exec file needs (its loader and libraries); empty when static.
    pub libraries: Vec<PathBuf>,
}

impl Plan {
    /// `<chroot-base>/<exec-name>/<id>`: the jail's own directory.
    pub fn jail_dir(&self) -> PathBuf {
        jail_dir(&self.chroot_base, &self.exec_name, &self.id)
    }
}

fn jail_dir(base: &Path, exec_name: &str, id: &str) -> PathBuf {
    base.join(exec_name).join(id)
}

pub(crate) fn check_id(id: &str) -> Result<(), JailError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(JailError::BadId(id.to_owned()))
    }
}

fn check_parent_cgroup(name: &str) -> Result<(), JailError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(JailError::BadParentCgroup(name.to_owned()))
    }
}

fn number(flag: &'static str, value: &str) -> Result<u32, JailError> {
    match value.parse::<u32>() {
        Ok(n) if n != u32::MAX => Ok(n),
        _ => Err(JailError::BadNumber {
            flag,
            value: value.to_owned(),
        }),
    }
}

fn limit(arg: &str) -> Result<(String, String), JailError> {
    let bad = || JailError::BadCgroupArg(arg.to_owned());
    let (key, value) = arg.split_once('=').ok_or_else(bad)?;
    let (controller, file) = key.split_once('.').ok_or_else(bad)?;
    let simple =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.".contains(&b));
    if !simple(controller) || controller.contains('.') || !simple(file) || value.contains('\n') {
        return Err(bad());
    }
    Ok((key.to_owned(), value.to_owned()))
}

impl JailConfig {
    /// Checks every input before anything is created.
    pub(crate) fn plan(&self) -> Result<Plan, JailError> {
        check_id(&self.id)?;
        let uid = number("uid", &self.uid)?;
        let gid = number("gid", &self.gid)?;
        if !self.chroot_base.is_absolute() {
            return Err(JailError::RelativeBase(self.chroot_base.clone()));
        }
        check_parent_cgroup(&self.parent_cgroup)?;
        let bad_exec = |reason: String| JailError::BadExecFile {
            path: self.exec_file.clone(),
            reason,
        };
        let meta = std::fs::metadata(&self.exec_file).map_err(|e| bad_exec(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad_exec("not a regular file".into()));
        }
        let exec_name = self
            .exec_file
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| bad_exec("its file name is not plain ASCII".into()))?
            .to_owned();
        let libraries = elf::runtime_files(&self.exec_file).map_err(bad_exec)?;
        let limits = self
            .cgroups
            .iter()
            .map(|a| limit(a))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(path) = &self.netns {
            std::fs::File::open(path).map_err(|source| JailError::Netns {
                path: path.clone(),
                source,
            })?;
        }
        Ok(Plan {
            id: self.id.clone(),
            exec_file: self.exec_file.clone(),
            exec_name,
            uid,
            gid,
            chroot_base: self.chroot_base.clone(),
            limits,
            parent_cgroup: self.parent_cgroup.clone(),
            netns: self.netns.clone(),
            vmm_args: self.vmm_args.clone(),
            libraries,
        })
    }
}

/// Checks `config` without making anything.
pub fn check(config: &JailConfig) -> Result<(), JailError> {
    config.plan().map(drop)
}

/// Detaches the calling process: it goes on in a child, in a session of its own, with its
/// standard streams on /dev/null; the caller's process exits 0.
pub fn daemonize() -> Result<(), JailError> {
    // SAFETY: the jailer is single-threaded at this point; daemon() forks, ends the parent,
    // calls setsid and reopens fds 0-2 on /dev/null (keeping the working directory).
    if unsafe { libc::daemon(1, 0) } != 0 {
        return Err(JailError::Sys {
            what: "daemonize",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Jails and runs the VMM, waits for its end, cleans up; returns the exit status to pass on.
pub fn run(config: &JailConfig) -> Result<i32, JailError> {
    let plan = config.plan()?;
    let jail = fs::Jail::prepare(&plan)?;
    let cgroups = match cgroup::Cgroups::create(&plan.parent_cgroup, &plan.id, &plan.limits) {
        Ok(cgroups) => cgroups,
        Err(e) => {
            jail.cleanup();
            return Err(e.into());
        }
    };
    let result = process::run_jailed(&plan, jail.root(), &cgroups);
    cgroups.remove();
    jail.cleanup();
    result
}

/// `--remove`: deletes a jail's directory (everything under `<chroot-base>/<exec-name>/<id>`)
/// and its cgroups, after its VM is gone.
pub fn remove(id: &str, exec_name: &str, chroot_base: &Path, parent_cgroup: &str) -> Result<(), JailError> {
    check_id(id)?;
    check_parent_cgroup(parent_cgroup)?;
    if exec_name.is_empty() || exec_name.contains('/') || exec_name == "." || exec_name == ".." {
        return Err(JailError::BadExecFile {
            path: exec_name.into(),
            reason: "an exec name is a plain file name".into(),
        });
    }
    cgroup::remove_named(parent_cgroup, id)?;
    fs::remove_jail(&jail_dir(chroot_base, exec_name, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JailConfig {
        JailConfig {
            id: "vm-1".into(),
            exec_file: "/bin/true".into(),
            uid: "1000".into(),
            gid: "1000".into(),
            chroot_base: "/srv/jail".into(),
            cgroups: vec!["memory.max=64M".into()],
            parent_cgroup: "vessel".into(),
            netns: None,
            vmm_args: vec![],
        }
    }

    #[test]
    fn inputs_are_checked_before_anything_is_made() {
        assert!(config().plan().is_ok());
        let bad = |edit: fn(&mut JailConfig)| {
            let mut c = config();
            edit(&mut c);
            c.plan().unwrap_err().to_string()
        };
        assert!(bad(|c| c.id = "a/b".into()).contains("Invalid jail id"));
        assert!(bad(|c| c.id = "..".into()).contains("Invalid jail id"));
        assert!(bad(|c| c.id = String::new()).contains("Invalid jail id"));
        assert!(bad(|c| c.uid = "bob".into()).contains("--uid"));
        assert!(bad(|c| c.gid = "-1".into()).contains("--gid"));
        assert!(bad(|c| c.uid = "4294967295".into()).contains("--uid"));
        assert!(bad(|c| c.exec_file = "/nonexistent/vmm".into()).contains("/nonexistent/vmm"));
        assert!(bad(|c| c.exec_file = "/".into()).contains("exec file"));
        assert!(bad(|c| c.chroot_base = "jails".into()).contains("absolute"));
        assert!(bad(|c| c.cgroups = vec!["memory.max".into()]).contains("--cgroup"));
        assert!(bad(|c| c.cgroups = vec!["../x.y=1".into()]).contains("--cgroup"));
        assert!(bad(|c| c.cgroups = vec!["memory.a/b=1".into()]).contains("--cgroup"));
        assert!(bad(|c| c.parent_cgroup = "..".into()).contains("parent cgroup"));
        assert!(bad(|c| c.netns = Some("/nonexistent/ns".into())).contains("network namespace"));
    }
}
