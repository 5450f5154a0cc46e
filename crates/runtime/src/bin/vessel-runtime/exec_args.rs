//! `exec`: the process to run, from `--process FILE` or from ARGS and flags over the container's own process.

use std::collections::HashSet;
use std::str::FromStr;

use anyhow::{anyhow, Context, Result};
use oci_spec::runtime::{Capability, LinuxCapabilities, Process};
use vessel_runtime::container::{self, ExecOptions, Runtime};

use crate::cli::ExecArgs;

pub fn exec(rt: &Runtime, a: ExecArgs) -> Result<u8> {
    let process = match &a.process {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("Cannot read {}", path.display()))?;
            let (p, unknown) = vessel_runtime::spec::parse_process(&text)
                .with_context(|| format!("Malformed {}", path.display()))?;
            for name in unknown {
                vessel_runtime::logging::warn(&format!("Unknown capability {name} ignored"));
            }
            p
        }
        None => process_from_args(rt, &a)?,
    };
    let opts = ExecOptions {
        id: a.id.clone(),
        process,
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        detach: a.detach,
        preserve_fds: a.preserve_fds,
    };
    Ok(container::exec(rt, &opts)?.map(|c| c as u8).unwrap_or(0))
}

fn process_from_args(rt: &Runtime, a: &ExecArgs) -> Result<Process> {
    if a.args.is_empty() {
        return Err(anyhow!("exec needs a command to run (or --process FILE)"));
    }
    // The container's own process is the template, as runc does; the record keeps it as created.
    let mut p = container_process(rt, &a.id).ok_or_else(|| anyhow!("Container {} does not exist", a.id))?;
    p.set_args(Some(a.args.clone()));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    p.set_terminal(Some(a.tty));
    if let Some(u) = &a.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let user = p.user_mut();
        user.set_uid(
            uid.parse()
                .with_context(|| format!("Invalid --user {u:?}: use uid[:gid]"))?,
        );
        user.set_gid(
            gid.parse()
                .with_context(|| format!("Invalid --user {u:?}: use uid[:gid]"))?,
        );
    }
    if !a.additional_gids.is_empty() {
        p.user_mut().set_additional_gids(Some(a.additional_gids.clone()));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &a.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &a.process_label {
        p.set_selinux_label(Some(label.clone()));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let extra: HashSet<Capability> = a
            .cap
            .iter()
            .map(|c| {
                let name = c.to_ascii_uppercase();
                let name = name.strip_prefix("CAP_").unwrap_or(&name).to_string();
                Capability::from_str(&name).map_err(|_| anyhow!("Unknown capability {c:?}"))
            })
            .collect::<Result<_>>()?;
        let add = |set: &Option<HashSet<Capability>>| -> Option<HashSet<Capability>> {
            Some(set.clone().unwrap_or_default().union(&extra).copied().collect())
        };
        let mut updated = LinuxCapabilities::default();
        updated.set_bounding(add(caps.bounding()));
        updated.set_effective(add(caps.effective()));
        updated.set_permitted(add(caps.permitted()));
        updated.set_inheritable(add(caps.inheritable()));
        updated.set_ambient(add(caps.ambient()));
        caps = updated;
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

fn container_process(rt: &Runtime, id: &str) -> Option<Process> {
    let sd = vessel_runtime::state::StateDir::open(&rt.root, id).ok()?;
    sd.load().ok()?.spec.process().clone()
}
