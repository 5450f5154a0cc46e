//! The stream protocol of attach and exec: frames of `[kind: u8][length: u32 big-endian][payload]`, the same
//! between a client and vesseld (over an upgraded HTTP connection) and between vesseld and a supervisor (over
//! its unix socket), so vesseld only relays bytes.

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client → instance: bytes for the process's stdin (or terminal).
    Stdin = 0,
    /// Instance → client: the process's stdout (or its terminal's output).
    Stdout = 1,
    /// Instance → client: the process's stderr.
    Stderr = 2,
    /// Instance → client: the process exited; payload is its exit code as i32 big-endian (128 + N for a
    /// signal N, -1 when unknown). The last frame of a stream.
    Exit = 3,
    /// Client → instance: the terminal's size, rows then columns, u16 big-endian each.
    Resize = 4,
    /// Client → instance: the client's stdin ended.
    StdinEof = 5,
    /// Instance → client: the process could not be started; payload is the message (UTF-8).
    Error = 6,
    /// Between a VM's supervisor and its guest agent only: a versioned JSON message (`vessel_agent::proto`).
    Control = 7,
}

impl FrameKind {
    pub fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::Exit,
            4 => FrameKind::Resize,
            5 => FrameKind::StdinEof,
            6 => FrameKind::Error,
            7 => FrameKind::Control,
            _ => return None,
        })
    }
}

pub const HEADER_LEN: usize = 5;
/// The largest payload a peer may send; bigger frames are a protocol error (a peer cannot make us allocate
/// without bound).
pub const MAX_PAYLOAD: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("Unknown stream frame kind {0}")]
    UnknownKind(u8),
    #[error("Stream frame of {0} bytes is over the limit of {MAX_PAYLOAD}")]
    TooLong(usize),
}

/// One frame, ready to send.
pub fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn encode_exit(code: i32) -> Vec<u8> {
    encode(FrameKind::Exit, &code.to_be_bytes())
}

pub fn encode_resize(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = rows.to_be_bytes().to_vec();
    p.extend_from_slice(&cols.to_be_bytes());
    encode(FrameKind::Resize, &p)
}

/// A resize frame's payload as (rows, cols).
pub fn decode_resize(payload: &[u8]) -> Option<(u16, u16)> {
    (payload.len() == 4).then(|| {
        (
            u16::from_be_bytes([payload[0], payload[1]]),
            u16::from_be_bytes([payload[2], payload[3]]),
        )
    })
}

pub fn decode_exit(payload: &[u8]) -> Option<i32> {
    <[u8; 4]>::try_from(payload).ok().map(i32::from_be_bytes)
}

/// Collects bytes as they arrive and yields whole frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet taken as a frame (to hand a stream over to another reader).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = FrameKind::from_u8(self.buf[0]).ok_or(FrameError::UnknownKind(self.buf[0]))?;
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some((kind, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_even_when_split_across_reads() {
        let mut bytes = encode(FrameKind::Stdout, b"hello");
        bytes.extend(encode_exit(-1));
        bytes.extend(encode_resize(24, 80));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got[0], (FrameKind::Stdout, b"hello".to_vec()));
        assert_eq!(decode_exit(&got[1].1), Some(-1));
        assert_eq!(decode_resize(&got[2].1), Some((24, 80)));
    }

    #[test]
    fn bad_frames_are_errors_not_allocations() {
        let mut d = Decoder::default();
        d.push(&[9, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(9)));
        let mut d = Decoder::default();
        d.push(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(0xffff_ffff)));
    }
}
