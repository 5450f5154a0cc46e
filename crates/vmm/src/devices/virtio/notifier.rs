//! Queue notifications through ioeventfds, processed on one worker thread per device.
//!
//! Without them, every QueueNotify write is an MMIO exit all the way to the vCPU thread, which
//! then does the device's work (a tap write, a disk write) before the guest runs again. With an
//! ioeventfd KVM completes the write in the kernel and signals an eventfd; the guest goes on at
//! once and the device's worker does the work in parallel. The vCPU path stays as the fallback
//! (a write KVM does not match still reaches the transport through the MMIO bus).
//!
//! The workers are quiesced with the vCPUs through the VM's [`PauseGate`], which device threads
//! of their own (a NIC's receive thread) hold too, so a paused VM's memory and queues stand still
//! for a snapshot. A notification that arrives while paused waits in its
//! eventfd; one taken by a snapshot is replayed on restore because a worker processes every
//! queue of its device once when it starts (harmless when nothing is pending).

use super::mmio::MmioTransport;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The eventfds of one transport's queues (index = queue index), registered with KVM by the VM.
pub struct QueueEvents {
    pub transport: Arc<Mutex<MmioTransport>>,
    pub events: Vec<EventFd>,
}

impl QueueEvents {
    /// One eventfd per queue of `transport`.
    pub fn new(transport: Arc<Mutex<MmioTransport>>) -> io::Result<Self> {
        let count = lock(&transport).queue_count();
        let events = (0..count)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { transport, events })
    }
}

/// Pause and stop requests shared by every thread that works on a VM's devices (queue workers,
/// receive threads), and how many are inside a device right now. A thread holds the gate
/// (`enter` .. `leave`) around each round of work that touches guest memory or queues.
#[derive(Default)]
pub struct PauseGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    paused: bool,
    stopping: bool,
    busy: usize,
}

impl PauseGate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits out a pause; false when the VM's device threads are to stop.
    pub fn enter(&self) -> bool {
        let mut state = self.state();
        while state.paused && !state.stopping {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.stopping {
            return false;
        }
        state.busy += 1;
        true
    }

    pub fn leave(&self) {
        let mut state = self.state();
        state.busy -= 1;
        // Only a pauser waits for busy to reach zero; a wake-up nobody waits for is still a
        // futex system call, paid on every round of every device thread.
        if state.busy == 0 && state.paused {
            self.changed.notify_all();
        }
    }

    /// Returns once no thread is inside a device, and keeps them out until `resume`.
    pub fn pause(&self) {
        let mut state = self.state();
        state.paused = true;
        while state.busy > 0 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn resume(&self) {
        self.state().paused = false;
        self.changed.notify_all();
    }

    /// Turns every thread away for good (the VM is ending).
    pub fn stop(&self) {
        self.state().stopping = true;
        self.changed.notify_all();
    }
}

/// The running workers of a VM's devices.
pub struct DeviceWorkers {
    gate: Arc<PauseGate>,
    /// Written to wake every worker out of poll(2) when stopping.
    wake: Arc<EventFd>,
    threads: Vec<JoinHandle<()>>,
}

impl DeviceWorkers {
    /// Starts one worker per device in `devices`, held by `gate`.
    pub fn spawn(devices: Vec<QueueEvents>, gate: Arc<PauseGate>) -> io::Result<Self> {
        let mut workers = Self {
            gate,
            wake: Arc::new(EventFd::new(EFD_NONBLOCK)?),
            threads: Vec::with_capacity(devices.len()),
        };
        for (index, device) in devices.into_iter().enumerate() {
            let (gate, wake) = (workers.gate.clone(), workers.wake.clone());
            let thread = std::thread::Builder::new()
                .name(format!("virtio-{index}"))
                .spawn(move || {
                    crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Device);
                    work(device, &gate, &wake)
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Stops and joins every worker.
    pub fn stop(&mut self) {
        self.gate.stop();
        let _ = self.wake.write(1);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for DeviceWorkers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(transport: &Mutex<MmioTransport>) -> MutexGuard<'_, MmioTransport> {
    transport.lock().unwrap_or_else(|p| p.into_inner())
}

/// A worker: wait for any queue's eventfd (or the wake-up), then process that queue.
fn work(device: QueueEvents, gate: &PauseGate, wake: &EventFd) {
    let process = |queue: usize| {
        if !gate.enter() {
            return false;
        }
        lock(&device.transport).notify_queue(queue);
        gate.leave();
        true
    };
    let counters = lock(&device.transport).counters().clone();
    // A restored device may have had a notification in flight when its snapshot was taken.
    for queue in 0..device.events.len() {
        if !process(queue) {
            return;
        }
    }
    let mut fds: Vec<libc::pollfd> = std::iter::once(wake.as_raw_fd())
        .chain(device.events.iter().map(AsRawFd::as_raw_fd))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs that poll only writes
        // `revents` of; the descriptors stay open for the whole loop.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        for (queue, pollfd) in fds[1..].iter_mut().enumerate() {
            if pollfd.revents == 0 {
                continue;
            }
            pollfd.revents = 0;
            // Reading resets the counter: several notifications become one pass over the queue.
            let notified = device.events[queue].read().unwrap_or(0);
            super::metrics::add(&counters.notifications, notified);
            if !process(queue) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pause_waits_for_busy_workers_and_holds_new_ones() {
        let gate = Arc::new(PauseGate::default());
        assert!(gate.enter());
        let pauser = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.pause())
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !pauser.is_finished(),
            "pause returned while a worker was inside a device"
        );
        gate.leave();
        pauser.join().unwrap();
        let entrant = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.enter())
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!entrant.is_finished(), "a worker entered a paused device");
        gate.stop();
        assert!(!entrant.join().unwrap(), "a stopping gate must turn workers away");
    }
}
