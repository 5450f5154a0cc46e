//! The protocol between a VM instance's supervisor (the host) and vessel-agent (the guest), over one vsock
//! stream per session (the host connects to guest port [`PORT`]).
//!
//! Frames are the attach protocol's (`[kind: u8][length: u32 BE][payload]`, at most 1 MiB each), so the
//! supervisor relays a guest process's output to its log and clients as it does a container's. A session:
//!
//! 1. the host sends `Control(Hello {version})`, the agent answers `Control(Hello {version, agent})`; a
//!    different major version is refused with `Control(Error)`;
//! 2. the host sends `Control(Run {process, setup})` (setup only for the instance's main process), the agent
//!    answers `Control(Started {pid})` or `Control(Error {message})`;
//! 3. then `Stdin`, `StdinEof`, `Resize` and `Control(Signal)` / `Control(Stats)` go to the guest,
//!    `Stdout`, `Stderr` and `Control(Stats)` come back, and last `Exit` with the process's status.
//!
//! The guest is untrusted: the host bounds every frame, times every wait, and takes anything it cannot parse
//! as the end of the session, never as a reason to fail itself.

use serde::{Deserialize, Serialize};
use vessel_api::frames::{self, FrameKind};

/// The protocol's version; a peer with another one is refused at the hello.
pub const VERSION: u32 = 1;
/// The guest port the agent listens on.
pub const PORT: u32 = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("bad agent message: {0}")]
    Message(String),
    #[error("the agent speaks protocol version {theirs}, this vessel speaks {VERSION}")]
    Version { theirs: u32 },
    #[error(transparent)]
    Frame(#[from] frames::FrameError),
}

/// What the host asks of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Hello {
        version: u32,
    },
    /// Run a process; `setup` (hostname, interfaces, files) is applied first. The `main` process is the
    /// instance's: in a guest whose PID 1 is the agent, its end powers the VM off.
    Run {
        process: Box<Process>,
        #[serde(default)]
        main: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        setup: Option<GuestSetup>,
    },
    /// A signal for the session's process.
    Signal {
        signal: i32,
    },
    /// The guest's resource use.
    Stats,
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Hello { version: u32, agent: String },
    Started { pid: i32 },
    Stats(GuestStats),
    Error { message: String },
}

/// A process to run, resolved on the host: numeric ids, the full environment, an absolute program path or
/// one found in the environment's PATH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default = "root_dir")]
    pub cwd: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub tty: bool,
    /// The terminal's first size.
    #[serde(default)]
    pub rows: u16,
    #[serde(default)]
    pub cols: u16,
    /// (resource name without RLIMIT_, lower case; soft; hard)
    #[serde(default)]
    pub rlimits: Vec<(String, u64, u64)>,
}

fn root_dir() -> String {
    "/".into()
}

/// The guest's identity and network, applied by the agent before the main process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GuestSetup {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Whole files to write (e.g. /etc/hosts, /etc/resolv.conf): (absolute path, content).
    #[serde(default)]
    pub files: Vec<(String, String)>,
}

/// One NIC, found by its MAC: addresses as CIDR, gateways for default routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub mac: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub mtu: u32,
}

/// The guest's view of its resources (from its /proc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GuestStats {
    pub memory_total: u64,
    pub memory_available: u64,
    pub cpu_usage_ns: u64,
    pub processes: u64,
}

/// A control frame holding `msg`.
pub fn control<T: Serialize>(msg: &T) -> Vec<u8> {
    frames::encode(FrameKind::Control, &serde_json::to_vec(msg).unwrap_or_default())
}

pub fn parse_request(payload: &[u8]) -> Result<Request, ProtoError> {
    serde_json::from_slice(payload).map_err(|e| ProtoError::Message(e.to_string()))
}

pub fn parse_reply(payload: &[u8]) -> Result<Reply, ProtoError> {
    serde_json::from_slice(payload).map_err(|e| ProtoError::Message(e.to_string()))
}

/// The host's check of the agent's hello.
pub fn check_hello(reply: &Reply) -> Result<String, ProtoError> {
    match reply {
        Reply::Hello { version, agent } if *version == VERSION => Ok(agent.clone()),
        Reply::Hello { version, .. } => Err(ProtoError::Version { theirs: *version }),
        Reply::Error { message } => Err(ProtoError::Message(message.clone())),
        other => Err(ProtoError::Message(format!("expected a hello, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: &[u8]) -> Vec<u8> {
        let mut d = frames::Decoder::default();
        d.push(frame);
        let (kind, payload) = d.next_frame().unwrap().unwrap();
        assert_eq!(kind, FrameKind::Control);
        payload
    }

    #[test]
    fn requests_and_replies_round_trip_as_control_frames() {
        let run = Request::Run {
            process: Box::new(Process {
                args: vec!["sh".into(), "-c".into(), "exit 3".into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                tty: true,
                rows: 24,
                cols: 80,
                ..Default::default()
            }),
            main: true,
            setup: Some(GuestSetup {
                hostname: "web".into(),
                ..Default::default()
            }),
        };
        assert_eq!(parse_request(&round_trip(&control(&run))).unwrap(), run);
        let hello = Reply::Hello {
            version: VERSION,
            agent: "vessel-agent 0.1.0".into(),
        };
        assert_eq!(parse_reply(&round_trip(&control(&hello))).unwrap(), hello);
        assert_eq!(check_hello(&hello).unwrap(), "vessel-agent 0.1.0");
    }

    #[test]
    fn another_version_or_garbage_is_an_error_not_a_panic() {
        let err = check_hello(&Reply::Hello {
            version: 99,
            agent: "x".into(),
        })
        .unwrap_err();
        assert_eq!(err, ProtoError::Version { theirs: 99 });
        assert!(parse_reply(b"\xff\x00garbage").is_err());
        assert!(parse_reply(br#"{"op":"hello","version":1,"agent":"a","extra":1}"#).is_err());
        assert!(parse_request(br#"{"op":"format_the_disk"}"#).is_err());
        assert!(check_hello(&Reply::Started { pid: 1 }).is_err());
    }
}
