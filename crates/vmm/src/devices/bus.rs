//! The port-I/O and MMIO buses: address ranges mapped to the devices that answer them.
//!
//! A vCPU exit names an address; the bus finds the device whose range holds it and calls it with the
//! offset inside that range, so devices never know where they were placed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the start of the device's range.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`; the device fills `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("Bus range {base:#x}+{len:#x} overlaps a device already placed there")]
    Overlap { base: u64, len: u64 },
    #[error("Bus range at {base:#x} has zero length or wraps around")]
    BadRange { base: u64 },
}

type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Ranges `[base, base + len)` with one device each, never overlapping.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: BTreeMap<u64, (u64, SharedDevice)>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base })?;
        let before = self.ranges.range(..end).next_back();
        if let Some((&other_base, &(other_len, _))) = before {
            if other_base + other_len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (&base, (len, device)) = self.ranges.range(..=addr).next_back()?;
        (addr - base < *len).then_some((addr - base, device))
    }

    /// Dispatches a read; returns false when no device answers `addr` (the caller decides what
    /// an unclaimed access means: reads of nothing return all ones, as on real hardware).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                lock(device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when no device answers `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                lock(device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// A device whose lock was poisoned by a panicking vCPU thread is still usable: its state is
/// plain registers, and the VMM is about to report that vCPU's failure anyway.
fn lock(device: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_offset_and_rejects_overlaps() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder(Vec::new())));
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        assert_eq!(
            bus.insert(0x3fc, 8, dev.clone()),
            Err(BusError::Overlap { base: 0x3fc, len: 8 })
        );
        assert_eq!(
            bus.insert(0x3f0, 9, dev.clone()),
            Err(BusError::Overlap { base: 0x3f0, len: 9 })
        );
        assert_eq!(
            bus.insert(0x10, 0, dev.clone()),
            Err(BusError::BadRange { base: 0x10 })
        );
        bus.insert(0x3f0, 8, dev.clone()).unwrap();
        let mut byte = [0u8; 1];
        assert!(bus.read(0x3fd, &mut byte));
        assert_eq!(byte, [5]);
        assert!(bus.write(0x3f8, b"A"));
        assert!(!bus.write(0x400, &[0]));
        assert!(!bus.read(0x3ef, &mut byte));
        assert_eq!(dev.lock().unwrap().0, vec![(0, vec![b'A'])]);
    }
}
