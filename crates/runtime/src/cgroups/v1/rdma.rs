//! `rdma` (the same rdma.max file on v1 and v2): per-device HCA handle and object limits.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::LinuxRdma;

use crate::cgroups::error::CgroupError;
use crate::cgroups::fs;

/// The rdma.max line for one device, or `None` when the spec sets no limit for it.
pub(crate) fn line(device: &str, limits: &LinuxRdma) -> Option<String> {
    let mut parts = vec![device.to_string()];
    if let Some(h) = limits.hca_handles() {
        parts.push(format!("hca_handle={h}"));
    }
    if let Some(o) = limits.hca_objects() {
        parts.push(format!("hca_object={o}"));
    }
    (parts.len() > 1).then(|| parts.join(" "))
}

pub(crate) fn apply(dir: &Path, rdma: &HashMap<String, LinuxRdma>) -> Result<(), CgroupError> {
    let mut devices: Vec<_> = rdma.iter().collect();
    devices.sort_by(|a, b| a.0.cmp(b.0));
    for (device, limits) in devices {
        if let Some(l) = line(device, limits) {
            fs::write(dir, "rdma.max", l)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxRdmaBuilder;

    #[test]
    fn rdma_lines() {
        let l = LinuxRdmaBuilder::default()
            .hca_handles(2u32)
            .hca_objects(100u32)
            .build()
            .unwrap();
        assert_eq!(
            line("mlx5_0", &l).as_deref(),
            Some("mlx5_0 hca_handle=2 hca_object=100")
        );
        assert_eq!(line("mlx5_0", &LinuxRdma::default()), None);
    }
}
