//! The client side of attach and exec: our stdin (and terminal size) out as frames, the instance's stdout,
//! stderr and exit code back; our terminal in raw mode while a `-t` session runs.

use std::io::Write;
use std::os::fd::AsFd;

use anyhow::{anyhow, Result};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vessel_api::frames::{self, Decoder, FrameKind};

/// Our terminal's settings, restored when dropped.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(orig) = &saved {
            let mut raw = orig.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode(saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, orig);
        }
    }
}

/// Our terminal's size (rows, columns), when stdin is a terminal.
pub fn window_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass; a descriptor that is no terminal makes it fail.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Relay a session until its exit frame; `None` when the connection ended without one.
pub async fn relay<S>(conn: S, send_stdin: bool, tty: bool) -> Result<Option<i32>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let _raw = (tty && send_stdin).then(RawMode::enter);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    if tty {
        if let Some((r, c)) = window_size() {
            let _ = tx.send(frames::encode_resize(r, c)).await;
        }
        if let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) {
            let tx = tx.clone();
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some((r, c)) = window_size() {
                        if tx.send(frames::encode_resize(r, c)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }
    if send_stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(frames::encode(FrameKind::StdinEof, &[])).await;
                        return;
                    }
                    Ok(n) => {
                        if tx
                            .send(frames::encode(FrameKind::Stdin, &buf[..n]))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                return;
            }
        }
    });
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rd.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return Ok(None);
        }
        decoder.push(&buf[..n]);
        while let Some((kind, payload)) = decoder.next_frame()? {
            match kind {
                FrameKind::Stdout => write_quietly(&mut std::io::stdout().lock(), &payload),
                FrameKind::Stderr => write_quietly(&mut std::io::stderr().lock(), &payload),
                FrameKind::Exit => return Ok(frames::decode_exit(&payload)),
                FrameKind::Error => return Err(anyhow!("{}", String::from_utf8_lossy(&payload))),
                _ => {}
            }
        }
    }
}

/// Output to a closed pipe ends us quietly, as `vessel ... | head` expects.
fn write_quietly(out: &mut impl Write, bytes: &[u8]) {
    if out.write_all(bytes).and_then(|_| out.flush()).is_err() {
        std::process::exit(0);
    }
}
