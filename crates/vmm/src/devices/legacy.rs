//! The few legacy PC devices a Linux guest uses: the i8042's reset line and the ACPI
//! hardware-reduced sleep and reset registers (how `poweroff` and `reboot` reach the VMM).

use super::bus::BusDevice;
use crate::arch::layout::{ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE};
use crate::exit::{ExitSender, VmExit};

/// Keyboard controller: only what a guest needs to reset the machine through it, and a status
/// that says "no data, input buffer empty" so the kernel's polling loops end at once.
pub struct I8042 {
    exits: ExitSender,
}

impl I8042 {
    const CMD_RESET_CPU: u8 = 0xfe;
    const COMMAND_OFFSET: u64 = 4;
    /// Ports from data (0x60) to command (0x64).
    pub const LEN: u16 = 5;

    pub fn new(exits: ExitSender) -> Self {
        Self { exits }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == Self::COMMAND_OFFSET && data.first() == Some(&Self::CMD_RESET_CPU) {
            let _ = self.exits.send(VmExit::Reset { how: "i8042 reset" });
        }
    }
}

/// ACPI sleep control (offset 0), sleep status (1) and reset (2) registers, one byte each.
pub struct AcpiPowerRegisters {
    exits: ExitSender,
}

impl AcpiPowerRegisters {
    /// SLP_EN and the SLP_TYP field of the sleep control register (ACPI 6, 4.8.3.7).
    const SLEEP_ENABLE: u8 = 1 << 5;
    const SLEEP_TYPE_SHIFT: u8 = 2;
    const SLEEP_TYPE_MASK: u8 = 0x7;
    /// Byte width of the three registers together.
    pub const LEN: u64 = 3;

    pub fn new(exits: ExitSender) -> Self {
        Self { exits }
    }
}

impl BusDevice for AcpiPowerRegisters {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Wake status is never set: the guest never sleeps in a state it wakes from.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            0 if value & Self::SLEEP_ENABLE != 0 => {
                let sleep_type = (value >> Self::SLEEP_TYPE_SHIFT) & Self::SLEEP_TYPE_MASK;
                if sleep_type == ACPI_S5_SLEEP_TYPE {
                    let _ = self.exits.send(VmExit::PowerOff);
                }
            }
            2 if value == ACPI_RESET_VALUE => {
                let _ = self.exits.send(VmExit::Reset {
                    how: "ACPI reset register",
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn s5_sleep_powers_off_and_reset_register_resets() {
        let (tx, rx) = channel();
        let mut acpi = AcpiPowerRegisters::new(tx.clone());
        acpi.write(0, &[(ACPI_S5_SLEEP_TYPE << 2) | (1 << 5)]);
        assert_eq!(rx.try_recv(), Ok(VmExit::PowerOff));
        acpi.write(0, &[3 << 2 | 1 << 5]);
        acpi.write(0, &[ACPI_S5_SLEEP_TYPE << 2]);
        acpi.write(1, &[0xff]);
        assert!(rx.try_recv().is_err());
        acpi.write(2, &[ACPI_RESET_VALUE]);
        assert_eq!(
            rx.try_recv(),
            Ok(VmExit::Reset {
                how: "ACPI reset register"
            })
        );
        let mut kbd = I8042::new(tx);
        let mut status = [0xffu8];
        kbd.read(4, &mut status);
        assert_eq!(status, [0]);
        kbd.write(4, &[0xfe]);
        assert!(matches!(rx.try_recv(), Ok(VmExit::Reset { .. })));
    }
}
