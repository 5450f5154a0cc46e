//! virtio-console with a single port (no MULTIPORT): the guest's hvc0.
//!
//! Output (transmitq) goes to a writer on the device's notification worker; input is pushed by
//! the VMM from any thread with [`ConsoleInput::queue_input`] and lands in the receive buffers
//! the guest posted, or waits (bounded) until it posts some. A snapshot keeps the queues'
//! positions and the input not yet delivered, which the restored device hands to the buffers
//! the guest has posted.

use super::notifier::PauseGate;
use super::{
    drain_queue, read_config_bytes, ActivateError, VirtioDevice, VirtioInterrupt, BASE_FEATURES, TYPE_CONSOLE,
};
use crate::GuestMemory;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_queue::{Queue, QueueState, Reader, Writer};

const RECEIVE: usize = 0;
const TRANSMIT: usize = 1;
const QUEUE_SIZE: u16 = 64;
/// Input waiting for guest buffers beyond this is dropped, as a UART overruns.
const MAX_PENDING: usize = 1 << 20;

pub struct Console {
    shared: Arc<Mutex<Shared>>,
}

/// A handle to feed the console's input from another thread (cheap to clone).
#[derive(Clone)]
pub struct ConsoleInput {
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    output: Box<dyn Write + Send>,
    pending: VecDeque<u8>,
    active: Option<Active>,
    /// The VM's pause gate, entered by input pushers (other threads) before they touch the rings.
    gate: Arc<PauseGate>,
}

struct Active {
    mem: GuestMemory,
    receive: Queue,
    transmit: Queue,
    interrupt: VirtioInterrupt,
}

impl Console {
    /// A console whose guest output goes to `output`.
    pub fn new(output: Box<dyn Write + Send>) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                output,
                pending: VecDeque::new(),
                active: None,
                gate: Arc::default(),
            })),
        }
    }

    /// The handle through which input reaches the guest; keep it before boxing the device.
    pub fn input(&self) -> ConsoleInput {
        ConsoleInput {
            shared: self.shared.clone(),
        }
    }

    /// See [`ConsoleInput::queue_input`].
    pub fn queue_input(&self, data: &[u8]) -> usize {
        self.input().queue_input(data)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

impl ConsoleInput {
    /// Queues `data` for the guest and delivers what fits in its receive buffers now,
    /// interrupting it if needed. Returns how many bytes were accepted (less than `data.len()`
    /// only when `MAX_PENDING` bytes already wait).
    pub fn queue_input(&self, data: &[u8]) -> usize {
        // The gate first, never under the lock: a paused VM's snapshot takes the lock to save.
        let gate = lock(&self.shared).gate.clone();
        if !gate.enter() {
            // The VM is ending: the input is taken and dropped, so no feeder waits for room.
            return data.len();
        }
        let mut shared = lock(&self.shared);
        let accepted = data.len().min(MAX_PENDING - shared.pending.len());
        shared.pending.extend(&data[..accepted]);
        if shared.deliver() {
            if let Some(active) = &shared.active {
                active.interrupt.signal_used_queue();
            }
        }
        drop(shared);
        gate.leave();
        accepted
    }
}

/// A poisoned lock only means a thread panicked mid-copy; the byte queue is still sound.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Moves pending input into receive buffers; returns whether the guest must be interrupted.
    fn deliver(&mut self) -> bool {
        let (Some(active), pending) = (self.active.as_mut(), &mut self.pending) else {
            return false;
        };
        let mem = &active.mem;
        drain_queue(&mut active.receive, mem, |chain| {
            // Buffers stay with us until there is something to put in them.
            if pending.is_empty() {
                return None;
            }
            let Ok(mut writer) = Writer::new(mem, chain) else {
                return Some(0);
            };
            let n = writer.available_bytes().min(pending.len());
            let (front, back) = pending.as_slices();
            let from_front = n.min(front.len());
            let ok = writer.write_all(&front[..from_front]).is_ok()
                && writer.write_all(&back[..n - from_front]).is_ok();
            pending.drain(..n);
            Some(if ok { n as u32 } else { 0 })
        })
    }

    /// Copies the guest's output to the writer; returns whether the guest must be interrupted.
    fn transmit(&mut self) -> bool {
        let (Some(active), output) = (self.active.as_mut(), &mut self.output) else {
            return false;
        };
        let mem = &active.mem;
        let notify = drain_queue(&mut active.transmit, mem, |chain| {
            if let Ok(mut reader) = Reader::new(mem, chain) {
                // Output the host cannot take is lost, as on a disconnected serial line.
                let _ = io::copy(&mut reader, output);
            }
            Some(0)
        });
        let _ = output.flush();
        notify
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        BASE_FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr: none valid without their feature bits.
        read_config_bytes(&[0; 12], offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: VirtioInterrupt,
    ) -> Result<(), ActivateError> {
        let got = queues.len();
        let Ok([receive, transmit]) = <[Queue; 2]>::try_from(queues) else {
            return Err(ActivateError::QueueCount {
                device_type: TYPE_CONSOLE,
                expected: 2,
                got,
            });
        };
        let mut shared = self.lock();
        shared.active = Some(Active {
            mem,
            receive,
            transmit,
            interrupt,
        });
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> bool {
        let mut shared = self.lock();
        match index {
            RECEIVE => shared.deliver(),
            TRANSMIT => shared.transmit(),
            _ => false,
        }
    }

    fn reset(&mut self) {
        // Input not yet delivered stays for the next driver.
        self.lock().active = None;
    }

    fn set_pause_gate(&mut self, gate: Arc<PauseGate>) {
        self.lock().gate = gate;
    }

    fn saved_data(&self) -> Vec<u8> {
        self.lock().pending.iter().copied().collect()
    }

    fn restore_data(&mut self, data: &[u8]) {
        let mut shared = self.lock();
        shared.pending.clear();
        shared.pending.extend(&data[..data.len().min(MAX_PENDING)]);
    }

    /// Input saved with the snapshot goes to buffers the guest had already posted: it may be
    /// waiting for it without notifying again.
    fn restored(&mut self) {
        let mut shared = self.lock();
        if shared.deliver() {
            if let Some(active) = &shared.active {
                active.interrupt.signal_used_queue();
            }
        }
    }

    fn saved_queues(&self) -> Option<Vec<QueueState>> {
        let shared = self.lock();
        Some(shared.active.as_ref().map_or_else(Vec::new, |active| {
            vec![active.receive.state(), active.transmit.state()]
        }))
    }
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;
