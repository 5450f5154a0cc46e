//! The five capability sets of the container process.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("Cannot set the {set} capability set: {source}")]
    Set {
        set: &'static str,
        source: caps::errors::CapsError,
    },
}

fn convert(set: &Option<Capabilities>) -> CapsHashSet {
    set.iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| v.as_str().and_then(|s| Capability::from_str(s).ok()))
        .collect()
}

/// Drop from the bounding set everything the config does not keep. Needs CAP_SETPCAP, so it runs before the
/// user switch.
pub fn drop_bounding(c: &LinuxCapabilities) -> Result<(), CapabilityError> {
    let keep = convert(c.bounding());
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapabilityError::Set {
                set: "bounding",
                source,
            })?;
        }
    }
    Ok(())
}

/// Set effective, permitted, inheritable and ambient sets, after the user switch.
pub fn apply_sets(c: &LinuxCapabilities) -> Result<(), CapabilityError> {
    let permitted = convert(c.permitted());
    let effective = convert(c.effective());
    let inheritable = convert(c.inheritable());
    // Effective must be a subset of permitted, so set permitted first only if it grows; set them in an order the
    // kernel accepts whatever the starting point.
    caps::set(
        None,
        CapSet::Effective,
        &effective.intersection(&permitted).copied().collect(),
    )
    .or_else(|_| caps::set(None, CapSet::Effective, &CapsHashSet::new()))
    .map_err(|source| CapabilityError::Set {
        set: "effective",
        source,
    })?;
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(|source| CapabilityError::Set {
        set: "inheritable",
        source,
    })?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|source| CapabilityError::Set {
        set: "permitted",
        source,
    })?;
    caps::set(None, CapSet::Effective, &effective).map_err(|source| CapabilityError::Set {
        set: "effective",
        source,
    })?;
    let ambient = convert(c.ambient());
    caps::clear(None, CapSet::Ambient).map_err(|source| CapabilityError::Set {
        set: "ambient",
        source,
    })?;
    for cap in ambient {
        // An ambient capability must also be permitted and inheritable; the kernel refuses others, as the spec
        // allows: skip those rather than fail.
        if permitted.contains(&cap) && inheritable.contains(&cap) {
            caps::raise(None, CapSet::Ambient, cap).map_err(|source| CapabilityError::Set {
                set: "ambient",
                source,
            })?;
        }
    }
    Ok(())
}
