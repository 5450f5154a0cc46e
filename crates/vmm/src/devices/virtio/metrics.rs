//! Counters the virtio devices keep as they work, and the per-device figures `GET /metrics` (and
//! `--metrics-path`) report. Relaxed atomics: each counter is exact, a set of them read together
//! is not one instant's cut.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Kept by every transport: the guest's notifications and the interrupts it was sent.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Queue notifications from the guest: each ioeventfd signal and each QueueNotify write.
    pub notifications: AtomicU64,
    /// Interrupts raised (edges on the device's line).
    pub interrupts: AtomicU64,
}

/// What a NIC moved, frames counted with their Ethernet header, without the virtio header.
#[derive(Debug, Default)]
pub struct NetCounters {
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Chains the guest sent that were malformed or that the tap refused.
    pub tx_dropped: AtomicU64,
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames from the tap the guest could not take (too large, bad buffers, offloads it lacks).
    pub rx_dropped: AtomicU64,
}

impl NetCounters {
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("tx_frames", get(&self.tx_frames)),
            ("tx_bytes", get(&self.tx_bytes)),
            ("tx_dropped", get(&self.tx_dropped)),
            ("rx_frames", get(&self.rx_frames)),
            ("rx_bytes", get(&self.rx_bytes)),
            ("rx_dropped", get(&self.rx_dropped)),
        ]
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// One device's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceMetrics {
    /// `devices::virtio::device_kind`: "net", "block", "console", "rng", "vsock".
    pub kind: &'static str,
    /// Which one: a NIC's tap, a disk's path; empty where there is only one.
    pub id: String,
    pub notifications: u64,
    pub interrupts: u64,
    /// The device's own counters, by name.
    #[serde(flatten)]
    pub counters: BTreeMap<&'static str, u64>,
}
