//! Containers made by `vessel run` (kept unless `--rm`): listing and removal, with their writable layers.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use vessel_runtime::container::{self, Runtime};

use crate::cli::Global;
use crate::output::table;

pub fn instance_dir(g: &Global, id: &str) -> PathBuf {
    g.root.join("containers").join(id)
}

/// Unmount the container's root (if mounted) and delete its directory (upper, work, config).
pub fn remove_instance(g: &Global, id: &str) -> Result<()> {
    let dir = instance_dir(g, id);
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(anyhow!("Cannot unmount {}: {e}", rootfs.display())),
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("Cannot remove {}", dir.display())),
    }
}

pub fn ps(g: &Global, all: bool) -> Result<()> {
    let rt = Runtime::new(g.runtime_root.clone(), false);
    let list: Vec<_> = container::list(&rt)?
        .into_iter()
        .filter(|c| all || c.status != "stopped")
        .collect();
    match g.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&list)?),
        "table" => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let image = std::fs::read_to_string(instance_dir(g, &c.id).join("config.json"))
                        .ok()
                        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                        .and_then(|v| v["annotations"]["io.vessel.image"].as_str().map(String::from))
                        .unwrap_or_default();
                    vec![
                        c.id.clone(),
                        image,
                        c.status.clone(),
                        c.pid.to_string(),
                        c.created.clone(),
                    ]
                })
                .collect();
            table(&["CONTAINER ID", "IMAGE", "STATUS", "PID", "CREATED"], &rows);
        }
        other => return Err(anyhow!("Unknown format {other:?}: use table or json")),
    }
    Ok(())
}

pub fn rm(g: &Global, force: bool, ids: &[String]) -> Result<()> {
    let rt = Runtime::new(g.runtime_root.clone(), false);
    let mut removed = Vec::new();
    for id in ids {
        let known_to_runtime = container::state(&rt, id).is_ok();
        if !known_to_runtime && !instance_dir(g, id).exists() {
            return Err(anyhow!("Container {id} does not exist"));
        }
        if known_to_runtime {
            container::delete(&rt, id, force)?;
        }
        remove_instance(g, id)?;
        removed.push(id.clone());
    }
    crate::output::emit(g, removed.join("\n"), serde_json::json!({ "removed": removed }));
    Ok(())
}
