//! The jail's directory: `<chroot-base>/<exec-name>/<id>/root`, the VMM binary in it, and the
//! device nodes the VMM opens (/dev/kvm, /dev/net/tun, /dev/urandom), owned by the VM's uid and
//! gid. Everything the jailer makes is recorded, so that a failed start and the end of the VM
//! remove exactly that and never a file the caller put there.

use super::{JailError, Plan};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Device nodes in the jail: path under the root, major, minor.
const DEVICES: [(&str, u32, u32); 3] = [
    ("dev/kvm", 10, 232),
    ("dev/net/tun", 10, 200),
    ("dev/urandom", 1, 9),
];

enum Made {
    Dir(PathBuf),
    File(PathBuf),
}

/// A prepared jail directory and what the jailer made in it.
pub(super) struct Jail {
    root: PathBuf,
    made: Vec<Made>,
}

fn fs_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JailError {
    let path = path.to_owned();
    move |source| JailError::Fs { what, path, source }
}

impl Jail {
    /// Makes the jail for `plan`; on failure removes what it made and returns the error.
    pub fn prepare(plan: &Plan) -> Result<Self, JailError> {
        let mut jail = Jail {
            root: plan.jail_dir().join("root"),
            made: Vec::new(),
        };
        match jail.fill(plan) {
            Ok(()) => Ok(jail),
            Err(e) => {
                jail.cleanup();
                Err(e)
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn fill(&mut self, plan: &Plan) -> Result<(), JailError> {
        let root = self.root.clone();
        self.make_dirs(&root, 0o755)?;
        // The VMM (as the VM's uid) creates its sockets in the root.
        chown(&root, plan.uid, plan.gid)?;
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o750))
            .map_err(fs_err("set the mode of", &root))?;
        let exec = root.join(&plan.exec_name);
        if std::fs::symlink_metadata(&exec).is_ok() {
            return Err(JailError::InUse(exec));
        }
        self.link_or_copy(&plan.exec_file, &exec)?;
        for library in &plan.libraries {
            let inside = root.join(library.strip_prefix("/").unwrap_or(library));
            if let Some(parent) = inside.parent() {
                self.make_dirs(parent, 0o755)?;
            }
            if std::fs::symlink_metadata(&inside).is_err() {
                let real = std::fs::canonicalize(library).map_err(fs_err("resolve", library))?;
                self.link_or_copy(&real, &inside)?;
            }
        }
        for (path, major, minor) in DEVICES {
            let node = root.join(path);
            if let Some(parent) = node.parent() {
                self.make_dirs(parent, 0o755)?;
            }
            self.mknod(&node, major, minor)?;
            chown(&node, plan.uid, plan.gid)?;
        }
        Ok(())
    }

    /// Creates `dir` and its missing ancestors, recording each; refuses a component that is a
    /// symbolic link or not a directory (it could point the jailer's writes elsewhere).
    fn make_dirs(&mut self, dir: &Path, mode: u32) -> Result<(), JailError> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(path) = at {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => break,
                Ok(_) => return Err(JailError::Unsafe(path.to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(path.to_owned()),
                Err(e) => return Err(fs_err("inspect", path)(e)),
            }
            at = path.parent();
        }
        for path in missing.into_iter().rev() {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .map_err(fs_err("create directory", &path))?;
            self.made.push(Made::Dir(path));
        }
        Ok(())
    }

    /// A hard link when on one file system (the file stays root's, read-only to the VM), else
    /// a copy.
    fn link_or_copy(&mut self, from: &Path, to: &Path) -> Result<(), JailError> {
        let linked = std::fs::hard_link(from, to).is_ok();
        self.made.push(Made::File(to.to_owned()));
        if !linked {
            std::fs::copy(from, to).map_err(fs_err("copy a file to", to))?;
        }
        Ok(())
    }

    fn mknod(&mut self, node: &Path, major: u32, minor: u32) -> Result<(), JailError> {
        if std::fs::symlink_metadata(node).is_ok() {
            return Err(JailError::InUse(node.to_owned()));
        }
        let c_path = c_path(node)?;
        // SAFETY: a NUL-terminated path; mknod creates a character device node there or fails.
        let rc = unsafe {
            libc::mknod(
                c_path.as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(major, minor),
            )
        };
        if rc != 0 {
            return Err(fs_err("create device node", node)(std::io::Error::last_os_error()));
        }
        self.made.push(Made::File(node.to_owned()));
        Ok(())
    }

    /// Removes what the jailer made, newest first; directories only when empty.
    pub fn cleanup(&self) {
        for made in self.made.iter().rev() {
            let _ = match made {
                Made::File(path) => std::fs::remove_file(path),
                Made::Dir(path) => std::fs::remove_dir(path),
            };
        }
    }
}

fn c_path(path: &Path) -> Result<std::ffi::CString, JailError> {
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| JailError::Fs {
        what: "use",
        path: path.to_owned(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), JailError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(fs_err("change the owner of", path))
}

/// `--remove`: the whole jail directory (refusing a symbolic link), and `<exec-name>` above
/// it once empty.
pub(super) fn remove_jail(dir: &Path) -> Result<(), JailError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() && meta.uid() == 0 => {
            std::fs::remove_dir_all(dir).map_err(fs_err("remove", dir))?;
        }
        Ok(_) => return Err(JailError::Unsafe(dir.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fs_err("inspect", dir)(e)),
    }
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}
