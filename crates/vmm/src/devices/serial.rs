//! The 8250/16550 serial console at COM1 (vm-superio's UART), its output sink and input feed.

use super::bus::BusDevice;
use super::irq::IrqLine;
use std::io::{self, Write};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;

/// Where the guest's console output goes.
pub enum SerialSink {
    /// Written through at once, byte by byte, so prompts without a newline show up.
    Stdout,
    File(std::fs::File),
    Discard,
}

impl Write for SerialSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SerialSink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()?;
                Ok(buf.len())
            }
            SerialSink::File(file) => file.write(buf),
            SerialSink::Discard => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            SerialSink::Stdout => io::stdout().flush(),
            SerialSink::File(file) => file.flush(),
            SerialSink::Discard => Ok(()),
        }
    }
}

/// A serial port's saved registers (DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR) and FIFO.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    pub registers: [u8; 9],
    pub fifo: Vec<u8>,
}

/// COM1 on the port bus.
pub struct SerialPort {
    uart: Serial<IrqLine, NoEvents, Box<dyn Write + Send>>,
}

impl SerialPort {
    pub fn new(irq: IrqLine, sink: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Serial::new(irq, sink),
        }
    }

    /// The UART's registers and receive FIFO, for a snapshot.
    pub fn save(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            registers: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            fifo: s.in_buffer,
        }
    }

    /// A port in the state `saved` describes, writing to `sink`.
    pub fn restore(irq: IrqLine, sink: Box<dyn Write + Send>, saved: &SerialSnapshot) -> io::Result<Self> {
        let [baud_divisor_low, baud_divisor_high, interrupt_enable, interrupt_identification, line_control, line_status, modem_control, modem_status, scratch] =
            saved.registers;
        let state = SerialState {
            baud_divisor_low,
            baud_divisor_high,
            interrupt_enable,
            interrupt_identification,
            line_control,
            line_status,
            modem_control,
            modem_status,
            scratch,
            in_buffer: saved.fifo.clone(),
        };
        let uart = Serial::from_state(&state, irq, NoEvents, sink)
            .map_err(|e| io::Error::other(format!("serial state does not fit: {e:?}")))?;
        Ok(Self { uart })
    }

    /// Queues guest input; returns how many bytes fit in the receive FIFO.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let room = self.uart.fifo_capacity();
        if room == 0 {
            return 0;
        }
        self.uart
            .enqueue_raw_bytes(&input[..input.len().min(room)])
            .unwrap_or(0)
    }
}

impl BusDevice for SerialPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(offset)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(offset)) = (data.first(), u8::try_from(offset)) {
            // A closed stdout or a full disk must not stop the guest: its output is lost instead.
            let _ = self.uart.write(offset, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_output_and_receives_input_with_an_interrupt() {
        let out = Shared::default();
        let irq = IrqLine::new(4).unwrap();
        let mut port = SerialPort::new(irq.clone(), Box::new(out.clone()));
        for b in b"hi" {
            port.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
        port.write(1, &[0x1]); // IER: interrupt when data arrives
        assert_eq!(port.feed(b"ok"), 2);
        assert_eq!(irq.event().read().unwrap(), 1);
        let mut lsr = [0u8];
        port.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut byte = [0u8];
        port.read(0, &mut byte);
        assert_eq!(byte, [b'o']);
        port.read(0x1000, &mut byte);
    }
}
