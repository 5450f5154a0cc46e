//! virtio-net (virtio 1.2 §5.1) over a host tap device.
//!
//! Two queues, receive (0) and transmit (1); no control queue, no multiqueue. The tap is opened
//! with IFF_VNET_HDR and a 12-byte header, the same `virtio_net_hdr_v1` the guest uses, so
//! checksum and segmentation offload information passes through untouched in both directions.
//!
//! Each NIC has one thread (`backend.rs`) for the tap and both queues, woken by the guest's
//! notifications (the eventfds KVM signals them on) and by the tap:
//!
//! - **Transmit** (`tx.rs`): each chain (header, then frame) becomes one writev to the tap, read
//!   straight from guest memory.
//! - **Receive**: frames from the tap go into the buffers the guest posted. When the guest has no
//!   buffers left the thread stops polling the tap until the guest's next notification of the
//!   receive queue.
//!
//! A round does both and interrupts the guest once. Without KVM's eventfds (it refused them),
//! a transmit notification is served in the vCPU thread that made it, and a receive one wakes
//! the thread.
//!
//! Offloads towards the guest (`TUNSETOFFLOAD`) follow the guest's negotiated features, which the
//! device learns through [`Net::ack_features`]; until told, it asks the tap for none, which is
//! always safe (plain frames with full checksums).
//!
//! A device reset stops the NIC's thread and keeps the tap, so a guest that reloads its driver
//! finds the same interface (with the address or bridge the host gave it); dropping the device
//! closes the tap, which removes a non-persistent interface.

mod backend;
mod device;
mod tap;
#[cfg(test)]
mod tests;
mod tx;

pub use device::Net;
pub use tap::{check_name as check_tap_name, NetError, Tap, MAX_NAME_LEN};

/// Device type id (virtio 1.2 §5).
pub const TYPE_NET: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_NET;

/// `struct virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers. Virtio 1.x always has num_buffers, whether or not MRG_RXBUF is negotiated.
const VNET_HDR_LEN: usize = 12;
/// Offset of num_buffers (little-endian u16) in the header.
const NUM_BUFFERS_OFFSET: usize = 10;
const ETH_HLEN: usize = 14;
/// The largest frame either way: a 64 KiB GSO packet, its Ethernet header and a VLAN tag.
const MAX_FRAME: usize = 65_535 + ETH_HLEN + 4;
/// The largest header plus frame.
const MAX_PACKET: usize = VNET_HDR_LEN + MAX_FRAME;
