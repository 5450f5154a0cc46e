//! A microVM's attachment to a bridge network: a persistent tap device, a port of the bridge, that the
//! VM's VMM opens by name (vessel-vmm's `--net tap=NAME,mac=MAC`). The guest's address, MAC and routes are
//! the guest's business (kernel `ip=` or its agent); the host side only plumbs the link. Persistent, so the
//! tap is made and attached before the VMM runs and outlives a VMM that dies: vesseld removes it.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::link::{self, LinkChange};
use crate::netlink::Netlink;
use crate::NetError;

const TUN_PATH: &str = "/dev/net/tun";

fn failed(name: &str, what: &str, e: std::io::Error) -> NetError {
    NetError::Link {
        name: name.into(),
        action: what.into(),
        source: e,
    }
}

/// A tap to make on a bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct TapPort {
    pub name: String,
    pub mtu: u32,
    /// A bandwidth limit each way, in bits per second.
    pub rate: Option<u64>,
}

/// Makes the persistent tap `port.name` (single queue, virtio net header: what vessel-vmm opens), a port of
/// `bridge` in hairpin mode, up. A tap left from an earlier attempt is replaced; on failure nothing stays.
pub fn attach(bridge: &str, port: &TapPort) -> Result<(), NetError> {
    let mut nl = Netlink::open().map_err(|e| failed(&port.name, "open netlink for", e))?;
    let bridge_index = link::index(bridge).ok_or_else(|| NetError::Missing(bridge.into()))?;
    if let Some(stale) = link::index(&port.name) {
        let _ = link::delete(&mut nl, stale);
    }
    create_persistent(&port.name)?;
    let plumbed = (|| {
        let i = link::index(&port.name).ok_or_else(|| NetError::Missing(port.name.clone()))?;
        link::set(
            &mut nl,
            i,
            LinkChange {
                up: true,
                controller: Some(bridge_index),
                mtu: Some(port.mtu),
                ..Default::default()
            },
        )
        .map_err(|e| failed(&port.name, "attach to bridge", e))?;
        link::set_hairpin(&mut nl, i).map_err(|e| failed(&port.name, "set hairpin mode on", e))?;
        if let Some(r) = port.rate {
            crate::rate::limit(&mut nl, i, r).map_err(|e| failed(&port.name, "rate-limit", e))
        } else {
            Ok(())
        }
    })();
    if plumbed.is_err() {
        detach(&port.name);
    }
    plumbed
}

/// Removes the tap (a VMM that still has it open keeps a dead descriptor).
pub fn detach(name: &str) {
    if let (Some(i), Ok(mut nl)) = (link::index(name), Netlink::open()) {
        let _ = link::delete(&mut nl, i);
    }
}

/// TUNSETIFF then TUNSETPERSIST on a fresh tun descriptor: the interface stays when the descriptor closes.
fn create_persistent(name: &str) -> Result<(), NetError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(failed(
            name,
            "create tap",
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|e| failed(name, "open /dev/net/tun (modprobe tun) to create tap", e))?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and fills the ifreq we own, on a tun control descriptor we own.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } < 0 {
        return Err(failed(name, "create tap", std::io::Error::last_os_error()));
    }
    // SAFETY: TUNSETPERSIST takes an integer argument, on the descriptor TUNSETIFF bound to the tap.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST as _, 1 as libc::c_ulong) } < 0 {
        return Err(failed(
            name,
            "make persistent tap",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
