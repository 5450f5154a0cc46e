//! Devices the guest sees: buses, interrupt lines, legacy devices and virtio.

pub mod bus;
pub mod ged;
pub mod input_feed;
pub mod irq;
pub mod legacy;
pub mod serial;
pub mod virtio;
