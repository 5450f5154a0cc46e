//! vessel's networks, as a synchronous library driven by vesseld: bridges ([`bridge`]), veth and tap
//! attachments ([`veth`], [`tap`]), macvlan and VLAN links ([`link`]), kept namespaces ([`netns`]),
//! address management ([`ipam`]), NAT, port forwards and isolation in nftables ([`firewall`]) and
//! bandwidth limits ([`rate`]). Everything is done through netlink and libnftables, never by running
//! `ip` or `nft`. Every call acts on the calling thread's network namespace.

pub mod bridge;
pub mod firewall;
pub mod ipam;
pub mod link;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod rate;
pub mod sysctl;
pub mod tap;
pub mod veth;

pub use ipnet;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("Cannot {action} link {name}: {source}")]
    Link {
        name: String,
        action: String,
        source: std::io::Error,
    },
    #[error("Link {0} does not exist")]
    Missing(String),
    #[error("Network namespace {path}: {reason}")]
    Netns {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("nftables: {0}")]
    Nftables(String),
    #[error("Cannot set sysctl {key}: {reason}")]
    Sysctl { key: String, reason: String },
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
}
