//! The API's unix socket and the loop that serves it: one thread, non-blocking sockets and
//! poll(2), so a client that sends half a request or holds an idle keep-alive connection never
//! stalls the others, and every request reaches the controller on the same thread.

use super::http::{self, Parsed, Request, Response, MAX_BODY, MAX_HEAD};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Open connections beyond this are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// Stop parsing pipelined requests while this much output waits for a slow reader.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("Cannot use API socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("API socket {0} is in use by another process")]
    InUse(PathBuf),
    #[error("API socket path {0} exists and is not a socket; not replacing it")]
    NotASocket(PathBuf),
}

/// The listening socket, and what removes its file.
pub struct ApiSocket {
    pub listener: UnixListener,
    pub file: SocketFile,
}

/// The socket's path and identity: `remove` deletes the file only while it is still ours.
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    dev_ino: (u64, u64),
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.dev_ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl ApiSocket {
    /// Listens on `path`, replacing a stale socket file (one nobody accepts on). The socket is
    /// owner-only (created under umask 077, then mode 0600): whoever can connect controls the VM.
    pub fn bind(path: &Path) -> Result<Self, SocketError> {
        let io_err = |source| SocketError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(SocketError::InUse(path.to_owned()));
                }
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Ok(_) => return Err(SocketError::NotASocket(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // SAFETY: umask only swaps the process's file-creation mask; it is restored right after.
        let old_mask = unsafe { libc::umask(0o077) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(old_mask) };
        let listener = bound.map_err(io_err)?;
        // Owner-only from its creation; a socket needs no execute bit.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        Ok(ApiSocket {
            listener,
            file: SocketFile {
                path: path.to_owned(),
                dev_ino: (meta.dev(), meta.ino()),
            },
        })
    }
}

/// One client connection and its buffers.
struct Connection {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// No more requests are read: close once the output is written.
    closing: bool,
    /// The client has shut down its sending side.
    peer_done: bool,
    /// `100 Continue` was sent for the request being received.
    sent_continue: bool,
    dead: bool,
}

impl Connection {
    fn new(stream: UnixStream) -> Self {
        Connection {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            closing: false,
            peer_done: false,
            sent_continue: false,
            dead: false,
        }
    }

    fn events(&self) -> libc::c_short {
        if self.written < self.output.len() {
            libc::POLLOUT
        } else if self.closing {
            0
        } else {
            libc::POLLIN
        }
    }

    fn on_ready(&mut self, revents: libc::c_short, handle: &mut dyn FnMut(&Request) -> Response) {
        if revents & libc::POLLNVAL != 0 {
            self.dead = true;
            return;
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && self.events() == libc::POLLIN {
            self.receive();
        }
        self.process(handle);
        self.flush(handle);
    }

    /// Reads what the client sent, up to the most one request can need.
    fn receive(&mut self) {
        let mut chunk = [0u8; 4096];
        while self.input.len() < MAX_HEAD + MAX_BODY {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.peer_done = true;
                    return;
                }
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// Answers the complete requests received, in order.
    fn process(&mut self, handle: &mut dyn FnMut(&Request) -> Response) {
        while !self.closing && !self.dead && self.output.len() < OUTPUT_HIGH_WATER {
            match http::parse(&self.input) {
                Ok(Parsed::Incomplete { expects_continue }) => {
                    if expects_continue && !self.sent_continue {
                        self.output.extend_from_slice(http::CONTINUE);
                        self.sent_continue = true;
                    }
                    // A request cut short by the client's end is dropped with the connection.
                    self.closing |= self.peer_done;
                    break;
                }
                Ok(Parsed::Complete { request, consumed }) => {
                    self.input.drain(..consumed);
                    self.sent_continue = false;
                    let response = handle(&request);
                    let close = !request.keep_alive;
                    self.output
                        .extend(response.encode(close, request.method == "HEAD"));
                    self.closing |= close;
                }
                Err(e) => {
                    self.output
                        .extend(Response::fault(e.status, &e.message).encode(true, false));
                    self.input.clear();
                    self.closing = true;
                }
            }
        }
    }

    /// Writes pending output; once it is all out, parses requests held back, or closes.
    fn flush(&mut self, handle: &mut dyn FnMut(&Request) -> Response) {
        while !self.dead && self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => self.dead = true,
                Ok(n) => {
                    self.written += n;
                    if self.written == self.output.len() {
                        self.output.clear();
                        self.written = 0;
                        // Pipelined requests may wait behind the output just written.
                        self.process(handle);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.dead = true,
            }
        }
        if self.closing && self.output.is_empty() {
            self.close();
        }
    }

    fn close(&mut self) {
        // Unread input makes the kernel reset the peer on close, which could cost it the
        // response it has not read yet: drain first.
        let mut sink = [0u8; 4096];
        while matches!(self.stream.read(&mut sink), Ok(n) if n > 0) {}
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.dead = true;
    }
}

/// Serves `listener` until poll fails; `handle` answers each request.
pub fn serve(listener: &UnixListener, handle: &mut dyn FnMut(&Request) -> Response) -> io::Result<()> {
    let mut connections: Vec<Connection> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .map(|fd| (fd, libc::POLLIN))
            .chain(connections.iter().map(|c| (c.stream.as_raw_fd(), c.events())))
            .map(|(fd, events)| libc::pollfd {
                fd,
                events,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs poll may write into.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (connection, fd) in connections.iter_mut().zip(&fds[1..]) {
            if fd.revents != 0 {
                connection.on_ready(fd.revents, handle);
            }
        }
        connections.retain(|c| !c.dead);
        if fds[0].revents != 0 {
            accept(listener, &mut connections);
        }
    }
}

fn accept(listener: &UnixListener, connections: &mut Vec<Connection>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) if connections.len() >= MAX_CONNECTIONS => {
                let busy = Response::fault(503, "Too many open API connections");
                let _ = (&stream).write_all(&busy.encode(true, false));
            }
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_ok() {
                    connections.push(Connection::new(stream));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                // Out of descriptors, say: the pending connection stays queued and poll
                // reports it again, so pause rather than spin.
                std::thread::sleep(std::time::Duration::from_millis(20));
                return;
            }
        }
    }
}
