//! A VM made from an image: its boot parts (vessel's guest kernel and initramfs, the image's shared
//! read-only disk, its own writable disk, vsock for the agent) and the plan its supervisor carries out
//! through the agent (the image's process, resolved as a container's would be, and the guest's hostname,
//! interfaces and network files).

use std::net::IpAddr;
use std::path::Path;

use vessel_agent::proto::{GuestSetup, Interface, Process};
use vessel_api::Instance;

use super::vm::{BootParts, DEFAULT_DISK, GUEST_CID};
use super::{bundle, Manager, ManagerError};
use crate::supervisor::vm::AgentPlan;
use crate::vmboot;

fn boot_err(e: vmboot::BootError) -> ManagerError {
    ManagerError::Invalid(e.to_string())
}

/// The command line of a VM made from an image: its console, and the disks the agent mounts.
const IMAGE_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

impl Manager {
    pub(super) fn agent_plan_file(&self, id: &str) -> std::path::PathBuf {
        self.cfg.instance_dir(id).join("agent.json")
    }

    pub(super) fn image_boot(
        &self,
        inst: &Instance,
        on_networks: &[(&crate::store::AttachmentRecord, &vessel_api::Network)],
    ) -> Result<BootParts, ManagerError> {
        let spec = inst.config.vm.clone().unwrap_or_default();
        let dir = self.cfg.instance_dir(&inst.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ManagerError::Internal(format!("Cannot create {}: {e}", dir.display())))?;
        let store = self.image_store()?;
        let image = self
            .held_image(&store, &inst.id, &inst.image_id)
            .map_err(|e| ManagerError::Internal(format!("Image {} of {}: {e}", inst.image, inst.name)))?;
        let base = vmboot::disks::base_disk(&store, &image, &self.cfg.vm_disks_dir(), &inst.image)
            .map_err(boot_err)?;
        let data = dir.join("data.ext4");
        vmboot::disks::data_disk(&data, spec.disk_size.unwrap_or(DEFAULT_DISK)).map_err(boot_err)?;
        let (kernel, initrd) = match &spec.kernel {
            Some(k) => {
                let initrd = match &spec.initrd {
                    Some(i) => i.clone(),
                    // A kernel of the user's: its drivers must be built in; the initramfs holds the agent.
                    None => {
                        let out = dir.join("initramfs.img");
                        if vmboot::is_dynamic(&self.cfg.agent).unwrap_or(true) {
                            return Err(boot_err(vmboot::BootError::DynamicAgent(self.cfg.agent.clone())));
                        }
                        vmboot::initramfs::write(&self.cfg.agent, Path::new("/"), &[], &out)
                            .map_err(boot_err)?;
                        out.display().to_string()
                    }
                };
                (k.clone(), initrd)
            }
            None => {
                let g = vmboot::debian::default_kernel(&self.cfg.kernels_dir(), &self.cfg.agent)
                    .map_err(boot_err)?;
                (g.kernel.display().to_string(), g.initrd.display().to_string())
            }
        };
        let image_config = store
            .config(&image)
            .map_err(|e| ManagerError::Internal(format!("Image {}: {e}", inst.image)))?;
        // Users are named in the image's own /etc/passwd: the topmost layer that has one.
        let layers = store
            .layer_dirs(&image)
            .map_err(|e| ManagerError::Internal(format!("Image {}: {e}", inst.image)))?;
        let users_root = layers
            .iter()
            .rev()
            .find(|l| l.join("etc/passwd").exists())
            .cloned()
            .unwrap_or_else(|| "/nonexistent".into());
        let parts = bundle::process_parts(&inst.config, &inst.id, &image_config, &users_root)?;
        let process = Process {
            args: parts.args,
            env: parts.env,
            cwd: parts.cwd,
            uid: parts.uid,
            gid: parts.gid,
            additional_gids: Vec::new(),
            tty: inst.config.tty,
            rows: 0,
            cols: 0,
            rlimits: parts
                .rlimits
                .into_iter()
                .map(|(k, soft, hard)| (k.trim_start_matches("RLIMIT_").to_ascii_lowercase(), soft, hard))
                .collect(),
        };
        let mut files = Vec::new();
        for (dest, src) in self.write_net_files(inst, &parts.hostname)? {
            let text = std::fs::read_to_string(&src)
                .map_err(|e| ManagerError::Internal(format!("Cannot read {}: {e}", src.display())))?;
            files.push((dest, text));
        }
        let plan = AgentPlan {
            vsock: self.cfg.vsock_socket(&inst.id),
            boot_timeout_secs: self.cfg.vm_boot_timeout,
            process,
            setup: GuestSetup {
                hostname: parts.hostname,
                interfaces: interfaces(on_networks),
                files,
            },
        };
        let plan_file = self.agent_plan_file(&inst.id);
        crate::supervisor::write_atomic(&plan_file, &serde_json::to_vec(&plan).unwrap_or_default())
            .map_err(|e| ManagerError::Internal(format!("Cannot write {}: {e}", plan_file.display())))?;
        let cmdline = format!(
            "{} vessel.root=/dev/vda vessel.data=/dev/vdb",
            spec.cmdline.as_deref().unwrap_or(IMAGE_CMDLINE)
        );
        Ok(BootParts {
            kernel,
            initrd: Some(initrd),
            disks: vec![format!("{},ro", base.display()), data.display().to_string()],
            cmdline,
            serial: format!("file:{}", dir.join("console.log").display()),
            vsock: Some(format!(
                "cid={GUEST_CID},path={}",
                self.cfg.vsock_socket(&inst.id).display()
            )),
        })
    }
}

/// The guest's interfaces: addresses with their prefixes, and a default route per family through the first
/// network that has one (not an internal network).
fn interfaces(on_networks: &[(&crate::store::AttachmentRecord, &vessel_api::Network)]) -> Vec<Interface> {
    let prefix = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| s.parse::<vessel_net::ipnet::IpNet>().ok())
            .map_or(0, |n| n.prefix_len())
    };
    let (mut have4, mut have6) = (false, false);
    on_networks
        .iter()
        .map(|(a, n)| {
            let mut i = Interface {
                mac: a.mac.clone(),
                mtu: n.mtu,
                ..Default::default()
            };
            if let Some(ip) = a.ip4 {
                i.addresses
                    .push(format!("{}/{}", IpAddr::V4(ip), prefix(&n.subnet)));
                if !have4 && !n.internal {
                    i.gateways.extend(n.gateway.clone());
                    have4 = true;
                }
            }
            if let Some(ip) = a.ip6 {
                i.addresses
                    .push(format!("{}/{}", IpAddr::V6(ip), prefix(&n.subnet6)));
                if !have6 && !n.internal {
                    i.gateways.extend(n.gateway6.clone());
                    have6 = true;
                }
            }
            i
        })
        .collect()
}
