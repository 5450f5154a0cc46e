//! The ACPI Generic Event Device (GED): how the VMM tells a hardware-reduced ACPI guest that
//! something happened, here that its power button was pressed.
//!
//! Hardware-reduced ACPI has no fixed-feature power button and no GPE blocks; events reach the
//! guest as an interrupt on the GED (`_HID "ACPI0013"` in the DSDT, see `acpi/dsdt.rs`), whose
//! `_EVT` method reads this device's status register and turns each bit into a `Notify`. Linux's
//! GED driver (built in) runs `_EVT` on the interrupt; the button driver then reports
//! `KEY_POWER` on its "Power Button" input device, which systemd-logind or acpid act on.
//!
//! The register is one byte at [`layout::ACPI_GED_STATUS_PORT`](crate::arch::layout): bit 0 is
//! "power button pressed". Reading returns the pending events and clears them, so one `_EVT`
//! run handles each event once and a second (spurious) run finds nothing. Writes are ignored.
//! Events wait in the register until the guest reads them: the interrupt of a press made before
//! the guest's GED driver is ready is lost, but its bit is still there at the next press.

use super::bus::BusDevice;
use super::irq::IrqLine;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// Status register bit: the power button was pressed.
pub const EVENT_POWER_BUTTON: u8 = 1 << 0;

#[derive(Debug, thiserror::Error)]
pub enum GedError {
    #[error("Cannot raise the ACPI event interrupt (GSI {gsi}): {source}")]
    Interrupt { gsi: u32, source: std::io::Error },
}

/// The GED's state, shared by the port bus (the guest's reads) and the API (the presses).
#[derive(Debug)]
pub struct Ged {
    pending: AtomicU8,
    irq: IrqLine,
}

impl Ged {
    /// Bytes of port space the status register takes.
    pub const LEN: u16 = 1;

    pub fn new(irq: IrqLine) -> Self {
        Ged {
            pending: AtomicU8::new(0),
            irq,
        }
    }

    /// Latches a power-button press and interrupts the guest.
    pub fn press_power_button(&self) -> Result<(), GedError> {
        self.signal(EVENT_POWER_BUTTON)
    }

    fn signal(&self, event: u8) -> Result<(), GedError> {
        // The bit is set before the interrupt, so the `_EVT` the interrupt starts sees it.
        self.pending.fetch_or(event, Ordering::SeqCst);
        self.irq.trigger().map_err(|source| GedError::Interrupt {
            gsi: self.irq.gsi(),
            source,
        })
    }

    /// What the guest reads from the status register: the pending events, cleared by the read.
    pub fn take_events(&self) -> u8 {
        self.pending.swap(0, Ordering::SeqCst)
    }

    /// The events the guest has not read yet, left pending (for a snapshot).
    pub fn pending(&self) -> u8 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Puts back the events of a snapshot and interrupts the guest for them. The interrupt may
    /// be a second one for the same events (the first was delivered but `_EVT` had not run
    /// yet): that `_EVT` run finds the register clear and does nothing.
    pub fn restore(&self, events: u8) -> Result<(), GedError> {
        if events == 0 {
            return Ok(());
        }
        self.signal(events)
    }
}

/// The status register on the port bus. Bus devices are locked per access; the [`Ged`] behind
/// it is shared so that a press never waits for a vCPU.
pub struct GedRegister(pub Arc<Ged>);

impl BusDevice for GedRegister {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        // Only a read of the register's byte consumes the events; wider or stray reads see 0.
        if offset == 0 && data.len() == 1 {
            data[0] = self.0.take_events();
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ged() -> (Arc<Ged>, GedRegister) {
        let ged = Arc::new(Ged::new(IrqLine::new(23).unwrap()));
        (ged.clone(), GedRegister(ged))
    }

    fn read(register: &mut GedRegister) -> u8 {
        let mut byte = [0xff];
        register.read(0, &mut byte);
        byte[0]
    }

    #[test]
    fn ged_status_reads_pending_events_once() {
        let (ged, mut register) = ged();
        assert_eq!(read(&mut register), 0, "nothing pending at first");
        ged.press_power_button().unwrap();
        assert_eq!(read(&mut register), EVENT_POWER_BUTTON);
        assert_eq!(read(&mut register), 0, "the read cleared the event");
        // Two presses before the guest looks are one pending event.
        ged.press_power_button().unwrap();
        ged.press_power_button().unwrap();
        register.write(0, &[0xff]);
        assert_eq!(read(&mut register), EVENT_POWER_BUTTON, "writes clear nothing");
        assert_eq!(read(&mut register), 0);
        // Reads that are not the register's byte leave the event pending.
        ged.press_power_button().unwrap();
        let mut wide = [0xffu8; 2];
        register.read(0, &mut wide);
        assert_eq!(wide, [0, 0]);
        assert_eq!(read(&mut register), EVENT_POWER_BUTTON);
    }

    #[test]
    fn ged_press_raises_the_interrupt() {
        let (ged, _register) = ged();
        let event = ged.irq.event();
        assert!(
            event.read().is_err(),
            "no interrupt before a press (non-blocking read)"
        );
        ged.press_power_button().unwrap();
        assert_eq!(event.read().unwrap(), 1, "one edge per press");
        ged.press_power_button().unwrap();
        ged.press_power_button().unwrap();
        assert_eq!(event.read().unwrap(), 2);
    }
}
