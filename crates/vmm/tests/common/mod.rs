//! What the integration tests share: a scratch directory per test.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// `<tmp>/vessel-vmm-<suite>-<name>-<pid>`, emptied when made and removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(suite: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vessel-vmm-{suite}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `content` to `name` in the directory and returns its path.
    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Where a test's VMM puts its API socket.
    pub fn socket(&self) -> PathBuf {
        self.0.join("api.sock")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
