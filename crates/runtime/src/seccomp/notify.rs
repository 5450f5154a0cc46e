//! Handing the seccomp notify fd to the agent at `linux.seccomp.listenerPath` (runtime-spec
//! "containerProcessState"): one connection, one JSON document, the fd as `SCM_RIGHTS` with the first bytes.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::Serialize;
use serde_json::Value;

use super::SeccompError;

/// Used when the container state carries no `ociVersion`.
const FALLBACK_OCI_VERSION: &str = "1.2.0";

/// The runtime-spec "containerProcessState" document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerProcessState<'a> {
    oci_version: &'a str,
    fds: [&'static str; 1],
    pid: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    metadata: &'a str,
    state: &'a Value,
}

/// Connect to the agent's unix stream socket at `listener_path` and send it the container process state
/// with `fd` (the notify fd from [`super::Filter::load`]) as `SCM_RIGHTS`, then close the connection.
///
/// `state_json` is the container's runtime-spec state (what `state` prints: `ociVersion`, `id`, `status`,
/// `pid`, `bundle`, `annotations`); its `pid` becomes the document's `pid`. `metadata` is the profile's
/// `listenerMetadata` ("" leaves the field out).
///
/// `listener_path` is a host path: call this on the runtime's side (after taking the fd from the container
/// init over SCM_RIGHTS or `pidfd_getfd`), or in the init before it changes root. Whoever calls it must not
/// have its `connect`/`sendmsg`/`close` under the `SCMP_ACT_NOTIFY` rules being handed over.
pub fn send_notify_fd(
    listener_path: &Path,
    fd: impl AsFd,
    state_json: &[u8],
    metadata: &str,
) -> Result<(), SeccompError> {
    // A bad state is refused before anything is sent.
    process_state(listener_path, state_json, metadata)?;
    let stream = UnixStream::connect(listener_path).map_err(|source| SeccompError::Send {
        path: listener_path.to_path_buf(),
        source,
    })?;
    send_notify_fd_over(stream, listener_path, fd, state_json, metadata)
}

/// Like [`send_notify_fd`] over a connection made earlier: the container's init connects before it changes
/// root (the listener path is a host path) and sends once the filter is loaded, just before exec.
pub fn send_notify_fd_over(
    stream: UnixStream,
    listener_path: &Path,
    fd: impl AsFd,
    state_json: &[u8],
    metadata: &str,
) -> Result<(), SeccompError> {
    let payload = process_state(listener_path, state_json, metadata)?;
    let send_err = |source: std::io::Error| SeccompError::Send {
        path: listener_path.to_path_buf(),
        source,
    };
    let socket = stream.as_raw_fd();
    let fds = [fd.as_fd().as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&fds)];
    // The fd travels with the first bytes only, as the spec requires of a message split over several calls.
    let mut sent = retry_eintr(|| {
        sendmsg::<()>(
            socket,
            &[IoSlice::new(&payload)],
            &rights,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
    })
    .map_err(|e| send_err(e.into()))?;
    while sent < payload.len() {
        let n = retry_eintr(|| nix::sys::socket::send(socket, &payload[sent..], MsgFlags::MSG_NOSIGNAL))
            .map_err(|e| send_err(e.into()))?;
        if n == 0 {
            return Err(send_err(std::io::ErrorKind::WriteZero.into()));
        }
        sent += n;
    }
    // Dropping the stream closes the connection: exactly one state per connection.
    drop(stream);
    Ok(())
}

/// The JSON document sent to the agent.
pub(super) fn process_state(
    listener_path: &Path,
    state_json: &[u8],
    metadata: &str,
) -> Result<Vec<u8>, SeccompError> {
    let state_err = |reason: String| SeccompError::State {
        path: listener_path.to_path_buf(),
        reason,
    };
    let state: Value = serde_json::from_slice(state_json)
        .map_err(|e| state_err(format!("the state is not valid JSON: {e}")))?;
    let pid = state
        .get("pid")
        .and_then(Value::as_i64)
        .ok_or_else(|| state_err("the state has no numeric pid".into()))?;
    let oci_version = state
        .get("ociVersion")
        .and_then(Value::as_str)
        .unwrap_or(FALLBACK_OCI_VERSION);
    let document = ContainerProcessState {
        oci_version,
        fds: ["seccompFd"],
        pid,
        metadata,
        state: &state,
    };
    serde_json::to_vec(&document).map_err(|e| state_err(format!("cannot serialize it: {e}")))
}

fn retry_eintr<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}
