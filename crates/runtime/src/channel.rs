//! The sync channel between the runtime (parent) and the process it starts in the container: a SEQPACKET
//! socketpair carrying one small message per packet, named after the protocol step it marks.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("Sync channel: {0}")]
    Os(#[from] nix::Error),
    #[error("The container process exited before {0}")]
    Closed(&'static str),
    #[error("Unexpected message {got:?} while waiting for {want}")]
    Unexpected { got: String, want: &'static str },
}

/// One protocol step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Parent → child: ids are mapped and the child is in its cgroup; go on.
    Proceed,
    /// Child → parent: mounts are done; run the createRuntime / prestart hooks now.
    RunCreateRuntimeHooks,
    /// Parent → child: those hooks ran; here is the state JSON for createContainer hooks.
    CreateRuntimeHooksDone(String),
    /// Child → parent: everything is set up; waiting for `start` (or, for exec, about to exec).
    Ready,
    /// Child → parent: set-up failed; the text is the error.
    Failed(String),
    /// Intermediate child → parent: the container process is this host pid (after a second fork).
    Child(i32),
    /// Child → parent: I made my user namespace after joining the others; write my id maps, then Proceed.
    MapIds,
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        let (tag, body): (u8, &str) = match self {
            Message::Proceed => (b'P', ""),
            Message::RunCreateRuntimeHooks => (b'H', ""),
            Message::CreateRuntimeHooksDone(s) => (b'D', s),
            Message::Ready => (b'R', ""),
            Message::Failed(s) => (b'F', s),
            Message::Child(pid) => return format!("C{pid}").into_bytes(),
            Message::MapIds => (b'M', ""),
        };
        let mut v = Vec::with_capacity(1 + body.len());
        v.push(tag);
        v.extend_from_slice(body.as_bytes());
        v
    }

    fn decode(buf: &[u8]) -> Option<Message> {
        let body = String::from_utf8_lossy(buf.get(1..)?).into_owned();
        Some(match buf.first()? {
            b'P' => Message::Proceed,
            b'H' => Message::RunCreateRuntimeHooks,
            b'D' => Message::CreateRuntimeHooksDone(body),
            b'R' => Message::Ready,
            b'F' => Message::Failed(body),
            b'C' => Message::Child(body.parse().ok()?),
            b'M' => Message::MapIds,
            _ => return None,
        })
    }
}

/// One end of the channel.
pub struct Channel {
    fd: OwnedFd,
}

/// Both ends: (parent's, child's). Both are close-on-exec, so a successful exec in the child shows as EOF.
pub fn pair() -> Result<(Channel, Channel), ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Message) -> Result<(), ChannelError> {
        send(self.fd.as_raw_fd(), &msg.encode(), MsgFlags::MSG_NOSIGNAL)?;
        Ok(())
    }

    /// The next message, or None at EOF (the peer exited or exec'd).
    pub fn recv(&self) -> Result<Option<Message>, ChannelError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    let msg = Message::decode(&buf[..n]).ok_or_else(|| ChannelError::Unexpected {
                        got: String::from_utf8_lossy(&buf[..n]).into_owned(),
                        want: "a protocol message",
                    })?;
                    return Ok(Some(msg));
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Wait for one specific step; a `Failed` from the peer becomes that error text.
    pub fn expect(&self, want: Message, what: &'static str) -> Result<(), ChannelError> {
        match self.recv()? {
            Some(m) if m == want => Ok(()),
            Some(m) => Err(ChannelError::Unexpected {
                got: format!("{m:?}"),
                want: what,
            }),
            None => Err(ChannelError::Closed(what)),
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let (a, b) = pair().unwrap();
        for m in [
            Message::Proceed,
            Message::RunCreateRuntimeHooks,
            Message::CreateRuntimeHooksDone("{\"id\":\"x\"}".into()),
            Message::Ready,
            Message::Failed("Mount failed".into()),
            Message::Child(4242),
        ] {
            a.send(&m).unwrap();
            assert_eq!(b.recv().unwrap(), Some(m));
        }
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }
}
