//! `spec` (a default config.json) and `features` (what this runtime supports, runtime-spec features.md).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

pub fn write_spec(bundle: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(anyhow!("{} exists: remove it first", path.display()));
    }
    let text = serde_json::to_string_pretty(&vessel_runtime::spec::default_spec())?;
    std::fs::write(&path, text + "\n").with_context(|| format!("Cannot write {}", path.display()))
}

pub fn features() -> Value {
    let caps: Vec<String> = caps::all()
        .iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let apparmor =
        std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y");
    let selinux = Path::new("/sys/fs/selinux/enforce").exists();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": vessel_runtime::spec::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "lazytime", "loud", "mand",
            "noatime", "nodev", "nodiratime", "noexec", "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid",
            "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "runbindable", "rw",
            "shared", "silent", "slave", "strictatime", "suid", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                            "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]
            },
            "apparmor": { "enabled": apparmor },
            "selinux": { "enabled": selinux }
        },
        "annotations": { "io.github.vessel.runtime.version": env!("CARGO_PKG_VERSION") }
    })
}
