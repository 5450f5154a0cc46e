//! virtio-vsock (virtio 1.2 §5.10), stream sockets only, with the host end on unix sockets in
//! the manner of Firecracker's "hybrid" vsock:
//!
//! - host → guest: a host program connects to the unix socket `PATH`, writes
//!   `CONNECT <port>\n`, and once the guest accepts on that vsock port reads `OK <hostport>\n`;
//!   from then on the socket carries the stream. If the guest refuses, the socket is closed.
//! - guest → host: a guest connection to CID 2 port P is connected to the unix socket
//!   `PATH_P`, where a host program listens; if none does, the guest gets a reset.
//!
//! Queues are processed on the device's notification worker; host sockets are watched by one
//! backend thread (`backend.rs`) that runs while the device is active. Both work on the muxer
//! (`muxer.rs`, `host.rs`) behind one mutex. A snapshot keeps the queues' positions only: host
//! connections belong to the process, so a restored device sends the guest a transport reset
//! and the guest drops the connections it had. Credit flow control holds both ways: the guest may
//! have at most 256 KiB per connection not yet taken by the host, and the device sends the
//! guest no more than the buffer space it advertises.

mod backend;
mod connection;
mod host;
mod muxer;
mod packet;
mod socket;

use super::notifier::PauseGate;
use super::{read_config_bytes, ActivateError, VirtioDevice, VirtioInterrupt, BASE_FEATURES};
use crate::GuestMemory;
use backend::Backend;
use muxer::{lock, Active, Muxer, TOKEN_LISTENER};
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use virtio_queue::{Queue, QueueState};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Device type id (virtio 1.2 §5.10).
pub const TYPE_VSOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
/// VIRTIO_VSOCK_F_STREAM: stream sockets (implied when no type bit is negotiated).
const F_STREAM: u64 = 1 << 0;

const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;
const QUEUE_SIZE: u16 = 256;
/// The CIDs a guest may have: 0, 1 and 2 are the hypervisor, local and host; u32::MAX is
/// VMADDR_CID_ANY.
pub const GUEST_CIDS: std::ops::Range<u64> = 3..u32::MAX as u64;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock guest CID {0} is reserved or too large: it must be between 3 and 4294967294")]
    InvalidCid(u64),
    #[error("vsock socket {} is in use: another process listens on it, or the path is not a socket", path.display())]
    InUse { path: PathBuf },
    #[error("cannot listen on the vsock socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set up the event loop of the vsock socket {}: {source}", path.display())]
    EventLoop { path: PathBuf, source: io::Error },
}

/// The virtio-vsock device. Dropping it stops its thread, closes every socket and removes the
/// listening socket's file.
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    muxer: Arc<Mutex<Muxer>>,
    backend: Backend,
    /// Held by the backend thread around its work; closed while the VM is paused.
    gate: Arc<PauseGate>,
}

impl Vsock {
    /// Listens on `uds_path` for host connections to the guest with CID `guest_cid`. The path
    /// must not exist (a stale socket from a crashed VMM must be removed first).
    pub fn new(guest_cid: u64, uds_path: impl AsRef<Path>) -> Result<Self, VsockError> {
        if !GUEST_CIDS.contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let path = uds_path.as_ref().to_path_buf();
        let bind = || UnixListener::bind(&path);
        let listener = match bind() {
            // A socket nobody listens on is a dead VMM's (killed, or restored elsewhere): reuse it.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale_socket(&path) => {
                let _ = std::fs::remove_file(&path);
                bind()
            }
            other => other,
        }
        .map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => VsockError::InUse { path: path.clone() },
            _ => VsockError::Bind {
                path: path.clone(),
                source,
            },
        })?;
        let epoll_and_backend = || -> io::Result<(Arc<Epoll>, Backend)> {
            listener.set_nonblocking(true)?;
            let epoll = Arc::new(Epoll::new()?);
            let event = EpollEvent::new(EventSet::IN, TOKEN_LISTENER);
            epoll.ctl(ControlOperation::Add, listener.as_raw_fd(), event)?;
            let backend = Backend::new(epoll.clone())?;
            Ok((epoll, backend))
        };
        let (epoll, backend) = epoll_and_backend().map_err(|source| {
            // The socket file is ours: do not leave it behind.
            let _ = std::fs::remove_file(&path);
            VsockError::EventLoop {
                path: path.clone(),
                source,
            }
        })?;
        let muxer = Muxer::new(guest_cid, path.clone(), listener, epoll);
        Ok(Self {
            guest_cid,
            uds_path: path,
            muxer: Arc::new(Mutex::new(muxer)),
            backend,
            gate: Arc::default(),
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The socket host programs connect to; guest connections go to `<uds_path>_<port>`.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Ends the backend thread and closes every connection; the listener stays.
    fn deactivate(&mut self) {
        // Without the lock: the thread takes it before it looks at the stop event.
        self.backend.stop();
        lock(&self.muxer).deactivate();
    }

    #[cfg(test)]
    fn set_handshake_timeout(&self, timeout: std::time::Duration) {
        lock(&self.muxer).handshake_timeout = timeout;
    }
}

/// Whether `path` is a unix socket that refuses connections (its listener is gone).
fn is_stale_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket
        && std::os::unix::net::UnixStream::connect(path)
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.deactivate();
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        BASE_FEATURES | F_STREAM
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: VirtioInterrupt,
    ) -> Result<(), ActivateError> {
        let got = queues.len();
        let Ok([rx, tx, event]) = <[Queue; 3]>::try_from(queues) else {
            return Err(ActivateError::QueueCount {
                device_type: TYPE_VSOCK,
                expected: 3,
                got,
            });
        };
        self.deactivate();
        lock(&self.muxer).active = Some(Active {
            mem,
            rx,
            tx,
            event,
            interrupt,
        });
        if let Err(e) = self
            .backend
            .start(self.muxer.clone(), self.uds_path.clone(), self.gate.clone())
        {
            // ActivateError has no case for this; the guest keeps a device whose host side is
            // deaf (guest-initiated connections still reach the host, but replies do not).
            eprintln!(
                "vessel-vmm: vsock {}: cannot start the backend thread: {e}",
                self.uds_path.display()
            );
        }
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> bool {
        let mut muxer = lock(&self.muxer);
        match index {
            RX => muxer.process(false),
            TX => muxer.process(true),
            // The guest's event buffers stay posted: no event is ever sent.
            EVENT => false,
            _ => false,
        }
    }

    fn reset(&mut self) {
        self.deactivate();
    }

    fn set_pause_gate(&mut self, gate: Arc<PauseGate>) {
        self.gate = gate;
    }

    /// The three queues' positions (connections are not saved: see the module's comment).
    fn saved_queues(&self) -> Option<Vec<QueueState>> {
        let muxer = lock(&self.muxer);
        Some(muxer.active.as_ref().map_or_else(Vec::new, |active| {
            vec![active.rx.state(), active.tx.state(), active.event.state()]
        }))
    }

    fn restored(&mut self) {
        lock(&self.muxer).send_transport_reset();
    }
}

#[cfg(test)]
mod tests;
