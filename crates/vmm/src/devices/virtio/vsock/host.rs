//! The host end of the muxer: accepting clients on the listener, their `CONNECT <port>\n` line,
//! events on connected sockets, and handshake deadlines. Runs on the backend thread.

use super::connection::{ConnKey, Connection, State, OWE_REQUEST};
use super::muxer::{Muxer, MAX_CONNECTIONS, TOKEN_LISTENER};
use std::io::{self, Read};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};

/// "CONNECT 4294967295\n" is 19 bytes; anything much longer is not a CONNECT line.
const MAX_LINE: usize = 32;
/// After accept fails (out of fds), the listener rests this long.
const LISTENER_PAUSE: Duration = Duration::from_millis(100);

/// A host client that has not finished its CONNECT line.
pub struct Client {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

enum Line {
    Partial,
    Complete,
    Bad,
}

impl Client {
    /// Reads byte by byte so that nothing after the newline (the client's data) is consumed.
    fn read_line(&mut self) -> Line {
        let mut byte = [0];
        loop {
            match (&self.stream).read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => return Line::Complete,
                Ok(1) if self.line.len() < MAX_LINE => self.line.push(byte[0]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    return Line::Partial
                }
                // EOF, an error, or an overlong line.
                _ => return Line::Bad,
            }
        }
    }
}

/// The guest port of `CONNECT <port>` (a trailing CR tolerated).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let port = line.strip_suffix('\r').unwrap_or(line).strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

impl Muxer {
    /// Accepts every pending host client.
    pub fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.add_client(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A client that left before it was accepted.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => {
                    // The listener stays readable: rest rather than spin.
                    self.listener_paused_until = Some(Instant::now() + LISTENER_PAUSE);
                    self.set_listener_interest(EventSet::empty());
                    return;
                }
            }
        }
    }

    pub fn resume_listener(&mut self) {
        self.set_listener_interest(EventSet::IN);
    }

    fn set_listener_interest(&self, events: EventSet) {
        let event = EpollEvent::new(events, TOKEN_LISTENER);
        // Fails only if the listener is not in the set, where it was put at construction.
        let _ = self
            .epoll
            .ctl(ControlOperation::Modify, self.listener.as_raw_fd(), event);
    }

    /// Over the limit the client is closed at once: it reads EOF instead of "OK".
    fn add_client(&mut self, stream: UnixStream) {
        if self.conns.len() + self.clients.len() >= MAX_CONNECTIONS || stream.set_nonblocking(true).is_err() {
            return;
        }
        let token = self.next_token();
        let event = EpollEvent::new(EventSet::IN, token);
        if self
            .epoll
            .ctl(ControlOperation::Add, stream.as_raw_fd(), event)
            .is_ok()
        {
            let deadline = Instant::now() + self.handshake_timeout;
            self.clients.insert(
                token,
                Client {
                    stream,
                    line: Vec::new(),
                    deadline,
                },
            );
        }
    }

    /// An epoll event on a host socket other than the listener.
    pub fn host_event(&mut self, token: u64, events: EventSet) {
        if self.clients.contains_key(&token) {
            return self.client_readable(token);
        }
        let Some(&key) = self.tokens.get(&token) else {
            // Removed after epoll reported it.
            return;
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if events.contains(EventSet::ERROR) {
            conn.broken = true;
        } else if events.contains(EventSet::HANG_UP) {
            // Reported whatever the interest: leave the set, or it fires forever.
            if conn.interest.take().is_some() {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    conn.stream.as_raw_fd(),
                    EpollEvent::default(),
                );
            }
            conn.host_hung_up();
        } else {
            if events.intersects(EventSet::IN | EventSet::READ_HANG_UP) {
                conn.readable = true;
            }
            if events.contains(EventSet::OUT) {
                conn.flush();
            }
        }
        self.settle(key);
    }

    fn client_readable(&mut self, token: u64) {
        let Some(mut client) = self.clients.remove(&token) else {
            return;
        };
        match client.read_line() {
            Line::Partial => {
                self.clients.insert(token, client);
            }
            // Dropping the client closes it.
            Line::Bad => {}
            Line::Complete => {
                if let Some(port) = parse_connect(&client.line) {
                    self.host_connect(token, client.stream, port);
                }
            }
        }
    }

    /// A host client asked for guest port `peer_port`: REQUEST the guest, "OK" on RESPONSE.
    fn host_connect(&mut self, token: u64, stream: UnixStream, peer_port: u32) {
        let key = ConnKey {
            local_port: self.next_local_port(),
            peer_port,
        };
        let deadline = Instant::now() + self.handshake_timeout;
        let mut conn = Connection::new(stream, token, State::Connecting { deadline });
        // Still registered for the line; settle narrows the interest.
        conn.interest = Some(EventSet::IN);
        conn.owed |= OWE_REQUEST;
        self.insert(key, conn);
    }

    /// Closes clients that never sent their line and resets connections the guest never
    /// answered; wakes the listener after a pause.
    pub fn expire(&mut self, now: Instant) {
        self.clients.retain(|_, client| client.deadline > now);
        let late: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.deadline().is_some_and(|deadline| deadline <= now))
            .map(|(&key, _)| key)
            .collect();
        for key in late {
            if let Some(conn) = self.conns.get_mut(&key) {
                conn.broken = true;
            }
            self.settle(key);
        }
        if self.listener_paused_until.is_some_and(|until| until <= now) {
            self.listener_paused_until = None;
            self.resume_listener();
        }
    }

    /// Milliseconds until the next deadline (rounded up), or -1 for none: epoll_wait's timeout.
    pub fn timeout_ms(&self, now: Instant) -> i32 {
        let next = self
            .clients
            .values()
            .map(|client| client.deadline)
            .chain(self.conns.values().filter_map(Connection::deadline))
            .chain(self.listener_paused_until)
            .min();
        match next {
            None => -1,
            Some(deadline) => {
                let micros = deadline.saturating_duration_since(now).as_micros();
                i32::try_from(micros.div_ceil(1000)).unwrap_or(i32::MAX)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_connect;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1234"), Some(1234));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT ",
            b"connect 1",
            b"CONNECT +1",
            b"CONNECT 1 2",
            b"CONNECT 4294967296",
        ] {
            assert_eq!(parse_connect(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
