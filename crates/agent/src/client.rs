//! The host's end of a session: connect (through the VMM's vsock socket, or to a unix socket in tests),
//! hello, run. Everything the guest says is bounded and timed: a guest that sends garbage, frames over the
//! limit, or nothing gets an error here, never a hang or a panic of the host.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vessel_api::frames::{Decoder, FrameKind};

use crate::proto::{self, GuestSetup, Process, ProtoError, Reply, Request};

/// How long one answer of the agent may take once it is up.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest line the VMM's vsock socket answers a CONNECT with.
const MAX_CONNECT_LINE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the guest agent did not answer within {0} s (is the guest booting vessel's initramfs?)")]
    Timeout(u64),
    #[error("the guest agent's connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the guest agent: {0}")]
    Proto(#[from] ProtoError),
    #[error("the guest agent refused: {0}")]
    Refused(String),
    #[error("the guest agent closed the connection")]
    Closed,
}

pub struct AgentClient {
    stream: UnixStream,
    decoder: Decoder,
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl AgentClient {
    /// Connects to an agent listening on a unix socket (the agent run as a host process).
    pub fn connect_unix(path: &Path) -> Result<AgentClient, ClientError> {
        Ok(AgentClient::over(UnixStream::connect(path)?))
    }

    /// Connects to guest port [`proto::PORT`] through the VMM's vsock socket, retrying for `boot` while
    /// the guest boots (the VMM refuses connections to a port nobody listens on yet).
    pub fn connect_vsock(uds: &Path, boot: Duration) -> Result<AgentClient, ClientError> {
        let deadline = Instant::now() + boot;
        let wait = boot.as_secs();
        loop {
            match Self::try_vsock(uds, deadline) {
                Ok(c) => return Ok(c),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(ClientError::Io(e)) if timed_out(&e) => return Err(ClientError::Timeout(wait)),
                Err(ClientError::Io(_) | ClientError::Closed) => return Err(ClientError::Timeout(wait)),
                Err(e) => return Err(e),
            }
        }
    }

    fn try_vsock(uds: &Path, deadline: Instant) -> Result<AgentClient, ClientError> {
        let mut stream = UnixStream::connect(uds)?;
        // A guest that never answers the VMM's connection request holds this read: no longer than the boot.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(10), ANSWER_TIMEOUT);
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))?;
        writeln!(stream, "CONNECT {}", proto::PORT)?;
        // The VMM answers "OK <port>\n"; read it byte by byte so no frame byte is taken with it.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte)? {
                0 => return Err(ClientError::Closed),
                _ if byte[0] == b'\n' => break,
                _ if line.len() >= MAX_CONNECT_LINE => {
                    return Err(ClientError::Refused(
                        "the VMM's vsock answer is not a line".into(),
                    ))
                }
                _ => line.push(byte[0]),
            }
        }
        if !line.starts_with(b"OK ") {
            return Err(ClientError::Refused(String::from_utf8_lossy(&line).into_owned()));
        }
        Ok(AgentClient::over(stream))
    }

    fn over(stream: UnixStream) -> AgentClient {
        let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
        let _ = stream.set_write_timeout(Some(ANSWER_TIMEOUT));
        AgentClient {
            stream,
            decoder: Decoder::default(),
        }
    }

    /// Another bound on each answer (and each write) than [`ANSWER_TIMEOUT`].
    pub fn set_timeout(&mut self, t: Duration) {
        let _ = self.stream.set_read_timeout(Some(t));
        let _ = self.stream.set_write_timeout(Some(t));
    }

    fn timeout_secs(&self) -> u64 {
        self.stream
            .read_timeout()
            .ok()
            .flatten()
            .unwrap_or(ANSWER_TIMEOUT)
            .as_secs()
    }

    pub fn send(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(frame).map_err(|e| {
            if timed_out(&e) {
                ClientError::Timeout(self.timeout_secs())
            } else {
                ClientError::Io(e)
            }
        })
    }

    /// The next frame, within the answer timeout.
    pub fn next_frame(&mut self) -> Result<(FrameKind, Vec<u8>), ClientError> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(f) = self.decoder.next_frame().map_err(ProtoError::from)? {
                return Ok(f);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if timed_out(&e) => return Err(ClientError::Timeout(self.timeout_secs())),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next control message (other frames before it are a protocol error: nothing runs yet).
    fn reply(&mut self) -> Result<Reply, ClientError> {
        match self.next_frame()? {
            (FrameKind::Control, payload) => match proto::parse_reply(&payload)? {
                Reply::Error { message } => Err(ClientError::Refused(message)),
                r => Ok(r),
            },
            (kind, _) => {
                Err(ProtoError::Message(format!("unexpected {kind:?} frame before the process runs")).into())
            }
        }
    }

    /// Hello both ways; the agent's name and version.
    pub fn hello(&mut self) -> Result<String, ClientError> {
        self.send(&proto::control(&Request::Hello {
            version: proto::VERSION,
        }))?;
        let reply = self.reply()?;
        Ok(proto::check_hello(&reply)?)
    }

    /// Runs `process` (the instance's main one when `main`); its pid in the guest.
    pub fn run(
        &mut self,
        process: Process,
        main: bool,
        setup: Option<GuestSetup>,
    ) -> Result<i32, ClientError> {
        self.send(&proto::control(&Request::Run {
            process: Box::new(process),
            main,
            setup,
        }))?;
        match self.reply()? {
            Reply::Started { pid } => Ok(pid),
            other => Err(ProtoError::Message(format!("expected started, got {other:?}")).into()),
        }
    }

    /// The stream, for a caller that relays the session itself (poll, non-blocking reads).
    pub fn into_stream(self) -> (UnixStream, Decoder) {
        (self.stream, self.decoder)
    }

    /// Reads to the end of a session: collected stdout, stderr and the exit status. For tests and short
    /// non-interactive runs.
    pub fn collect(&mut self) -> Result<(Vec<u8>, Vec<u8>, i32), ClientError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.next_frame()? {
                (FrameKind::Stdout, d) => out.extend(d),
                (FrameKind::Stderr, d) => err.extend(d),
                (FrameKind::Exit, d) => {
                    let code = vessel_api::frames::decode_exit(&d)
                        .ok_or_else(|| ProtoError::Message("a bad exit frame".into()))?;
                    return Ok((out, err, code));
                }
                _ => {}
            }
        }
    }
}
