//! Temporary directories and anonymous files, removed safely.
//!
//! Removal never descends into a mount point: a runtime under test that leaks a bind mount of a host
//! directory into a bundle must not make the test delete host files. Leaked mounts are detached first
//! and reported on stderr.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::host;

/// A directory created with `mkdtemp(3)` under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/vessel-<prefix>-XXXXXX` with mode 0755 (user-namespaced containers must be
    /// able to traverse it).
    pub fn new(prefix: &str) -> TempDir {
        let template = std::env::temp_dir().join(format!("vessel-{prefix}-XXXXXX"));
        let path = nix::unistd::mkdtemp(&template)
            .unwrap_or_else(|e| panic!("Cannot create temp dir {}: {e}", template.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("Cannot chmod {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_tree_safely(&self.path);
    }
}

/// Detaches every mount at or below `path` (deepest first), then removes the tree. If a mount cannot be
/// detached the tree is left in place rather than risk deleting through it.
pub fn remove_tree_safely(path: &Path) {
    let mut leaked = host::mount_points_under(path);
    if !leaked.is_empty() {
        eprintln!(
            "warning: detaching {} mount(s) leaked under {}: {:?}",
            leaked.len(),
            path.display(),
            leaked
        );
        leaked.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in &leaked {
            let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        if !host::mount_points_under(path).is_empty() {
            eprintln!("warning: not removing {}: mounts remain", path.display());
            return;
        }
    }
    let _ = std::fs::remove_dir_all(path);
}

/// An anonymous file (O_TMPFILE) for a child's stdout or stderr: unlike a pipe, a container process that
/// inherits it never makes the reader block.
pub fn anon_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    match OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir)
    {
        Ok(f) => Ok(f),
        Err(_) => {
            let p = dir.join(format!(
                "vessel-anon-{}-{}",
                std::process::id(),
                crate::next_counter()
            ));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)?;
            std::fs::remove_file(&p)?;
            Ok(f)
        }
    }
}
