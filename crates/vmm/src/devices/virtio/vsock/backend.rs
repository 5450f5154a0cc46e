//! The host side's thread. Queue notifications are handled by the device's worker, but host sockets
//! become readable on their own time: this thread waits on the listener and every host socket
//! with epoll and moves what they have into the guest's rx buffers, interrupting the guest.
//! It runs while the device is active; reset and drop stop it through an eventfd.

use super::muxer::{lock, Muxer, TOKEN_LISTENER, TOKEN_STOP};
use crate::devices::virtio::notifier::PauseGate;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const EVENTS_PER_WAIT: usize = 64;

pub struct Backend {
    epoll: Arc<Epoll>,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    /// Set while the thread runs (tests watch it).
    running: Arc<AtomicBool>,
}

impl Backend {
    pub fn new(epoll: Arc<Epoll>) -> io::Result<Self> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_STOP),
        )?;
        Ok(Self {
            epoll,
            stop,
            thread: None,
            running: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts the thread (stopping one already running).
    pub fn start(
        &mut self,
        muxer: Arc<Mutex<Muxer>>,
        uds_path: PathBuf,
        gate: Arc<PauseGate>,
    ) -> io::Result<()> {
        self.stop();
        let epoll = self.epoll.clone();
        let running = self.running.clone();
        running.store(true, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("vsock-backend".into())
            .spawn(move || {
                crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Device);
                if let Err(e) = run(&muxer, &epoll, &gate) {
                    eprintln!("vessel-vmm: vsock {}: event loop failed: {e}", uds_path.display());
                }
                running.store(false, Ordering::SeqCst);
            });
        match spawned {
            Ok(thread) => {
                self.thread = Some(thread);
                Ok(())
            }
            Err(e) => {
                self.running.store(false, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Stops the thread and waits for it. The caller must not hold the muxer lock.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Cannot fail short of a counter at u64::MAX - 1, which one write per stop never reaches.
        let _ = self.stop.write(1);
        let _ = thread.join();
        // Consume the stop so the next thread does not see it.
        let _ = self.stop.read();
    }

    #[cfg(test)]
    pub fn running(&self) -> Arc<AtomicBool> {
        self.running.clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits, handles what epoll reports under the lock, expires deadlines, fills rx buffers; all of
/// it inside the VM's pause gate (a closed gate means the VM is ending).
fn run(muxer: &Mutex<Muxer>, epoll: &Epoll, gate: &PauseGate) -> io::Result<()> {
    let mut events = vec![EpollEvent::default(); EVENTS_PER_WAIT];
    loop {
        let timeout = lock(muxer).timeout_ms(Instant::now());
        let count = match epoll.wait(timeout, &mut events) {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if !gate.enter() {
            return Ok(());
        }
        let stop = handle(&mut lock(muxer), &events[..count]);
        gate.leave();
        if stop {
            return Ok(());
        }
    }
}

/// One round of the loop; true when the thread is asked to stop.
fn handle(muxer: &mut Muxer, events: &[EpollEvent]) -> bool {
    for event in events {
        let set = EventSet::from_bits_truncate(event.events());
        match event.data() {
            TOKEN_STOP => return true,
            TOKEN_LISTENER => muxer.accept(),
            token => muxer.host_event(token, set),
        }
    }
    muxer.expire(Instant::now());
    if muxer.process(false) {
        muxer.signal();
    }
    false
}
