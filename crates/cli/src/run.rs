//! `vessel run`: a container from an image, in the foreground, through the runtime library: the image's
//! layers as overlay lower dirs, a fresh upper dir, a config built from the image config and the flags.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use vessel_image::snapshot::mount_snapshot;
use vessel_runtime::container::{self, CreateOptions, RunOptions, Runtime};

use crate::cli::{Global, RunArgs};
use crate::containers::{instance_dir, remove_instance};
use crate::images::open_store;

/// What docker and podman give a container unless told otherwise.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

pub fn run(g: &Global, a: RunArgs) -> Result<u8> {
    // We fork a process into the container: run from the read-only view of our binary (CVE-2019-5736).
    vessel_runtime::sealed_exe::make_undumpable();
    vessel_runtime::sealed_exe::reexec_sealed()?;
    let store = open_store(g)?;
    let image = store.find(&a.image)?;
    let image_config = store.config(&image)?;
    let lowers = store.layer_dirs(&image)?;
    let id = match &a.name {
        Some(n) => n.clone(),
        None => random_id()?,
    };
    vessel_runtime::state::validate_id(&id)?;
    let dir = instance_dir(g, &id);
    if dir.exists() {
        return Err(anyhow!("Container {id} already exists"));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    let result = (|| -> Result<u8> {
        let snapshot = mount_snapshot(&lowers, &dir)?;
        let config = container_config(&a, &id, &image.name, &image_config, &snapshot.rootfs)?;
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("Cannot write {}", dir.join("config.json").display()))?;
        let rt = Runtime::new(g.runtime_root.clone(), false);
        let opts = RunOptions {
            create: CreateOptions {
                id: id.clone(),
                bundle: dir.clone(),
                ..Default::default()
            },
            detach: false,
            keep: !a.rm,
        };
        let code = container::run(&rt, &opts)?;
        Ok(code.clamp(0, 255) as u8)
    })();
    if a.rm || result.is_err() {
        let rt = Runtime::new(g.runtime_root.clone(), false);
        let _ = container::delete(&rt, &id, true);
        remove_instance(g, &id)?;
    }
    result
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Resolve USER[:GROUP] (names through the image's /etc/passwd and /etc/group) to numbers.
fn resolve_user(spec: &str, rootfs: &Path) -> Result<(u32, u32, Vec<u32>)> {
    let (user, group) = spec
        .split_once(':')
        .map(|(u, g)| (u, Some(g)))
        .unwrap_or((spec, None));
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => {
            let gid = passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[2] == user).then(|| f[3].parse().ok()).flatten()
            });
            (n, gid.unwrap_or(n))
        }
        Err(_) => passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[0] == user)
                    .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                    .flatten()
            })
            .ok_or_else(|| anyhow!("User {user:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[0] == g).then(|| f[2].parse().ok()).flatten()
                })
                .ok_or_else(|| anyhow!("Group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid, Vec::new()))
}

fn container_config(
    a: &RunArgs,
    id: &str,
    image_name: &str,
    image: &oci_spec::image::ImageConfiguration,
    rootfs: &PathBuf,
) -> Result<Value> {
    let ic = image.config().clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &a.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => ic.entrypoint().clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if a.command.is_empty() {
        ic.cmd().clone().unwrap_or_default()
    } else {
        a.command.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(anyhow!(
            "Image {image_name} has no command: give one after the image name"
        ));
    }
    let mut env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    let mut set = |kv: &str| {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.to_string());
    };
    for kv in ic.env().iter().flatten() {
        set(kv);
    }
    if a.tty {
        set("TERM=xterm");
    }
    for kv in &a.env {
        if kv.contains('=') {
            set(kv);
        } else if let Ok(v) = std::env::var(kv) {
            set(&format!("{kv}={v}"));
        }
    }
    let user = a
        .user
        .clone()
        .or_else(|| ic.user().clone())
        .filter(|u| !u.is_empty());
    let (uid, gid, _) = match &user {
        Some(u) => resolve_user(u, rootfs)?,
        None => (0, 0, Vec::new()),
    };
    let cwd = a
        .workdir
        .clone()
        .or_else(|| ic.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let mut spec = vessel_runtime::spec::default_spec();
    spec["root"] = json!({ "path": rootfs, "readonly": false });
    spec["hostname"] = json!(id.chars().take(12).collect::<String>());
    spec["annotations"] = json!({ "io.vessel.image": image_name });
    let p = &mut spec["process"];
    p["terminal"] = json!(a.tty);
    p["args"] = json!(args);
    p["env"] = json!(env);
    p["cwd"] = json!(cwd);
    p["user"] = json!({ "uid": uid, "gid": gid });
    p["noNewPrivileges"] = json!(false);
    p["capabilities"] =
        json!({ "bounding": DEFAULT_CAPS, "effective": DEFAULT_CAPS, "permitted": DEFAULT_CAPS });
    p["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }]);
    let linux = &mut spec["linux"];
    linux["cgroupsPath"] = json!(format!("/vessel/{id}"));
    let mut resources = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if let Some(m) = &a.memory {
        resources["memory"] = json!({ "limit": vessel_runtime::units::parse_bytes(m)? });
    }
    if let Some(c) = a.cpus {
        if c <= 0.0 {
            return Err(anyhow!("--cpus must be positive"));
        }
        resources["cpu"] = json!({ "quota": (c * 100_000.0) as i64, "period": 100_000 });
    }
    if let Some(n) = a.pids_limit {
        resources["pids"] = json!({ "limit": n });
    }
    linux["resources"] = resources;
    Ok(spec)
}
