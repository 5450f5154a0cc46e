//! The host's side against a guest agent it cannot trust: garbage, frames over the limit, replies out of
//! order, silence, and random bytes. Each ends the session with an error, in bounded time, without a panic
//! or an unbounded allocation of the host.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use vessel_agent::client::{AgentClient, ClientError};
use vessel_agent::proto::{self, Reply};
use vessel_api::frames::{self, FrameKind};

/// A fake agent that answers the first bytes it gets with `reply`, then keeps the connection open.
fn fake_agent(name: &str, reply: Vec<u8>) -> (std::path::PathBuf, std::thread::JoinHandle<()>) {
    let path = std::env::temp_dir().join(format!("vessel-fake-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(&reply);
            std::thread::sleep(Duration::from_millis(700));
        }
    });
    (path, h)
}

fn hello_against(name: &str, reply: Vec<u8>) -> ClientError {
    let (path, h) = fake_agent(name, reply);
    let mut c = AgentClient::connect_unix(&path).unwrap();
    c.set_timeout(Duration::from_millis(500));
    let t0 = Instant::now();
    let err = c.hello().unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "{name}: took {:?}",
        t0.elapsed()
    );
    let _ = h.join();
    let _ = std::fs::remove_file(&path);
    err
}

#[test]
fn garbage_huge_frames_wrong_replies_and_silence_are_errors() {
    let e = hello_against("garbage", vec![0xee; 100]);
    assert!(matches!(e, ClientError::Proto(_)), "{e:?}");
    let e = hello_against("huge", vec![FrameKind::Control as u8, 0x7f, 0xff, 0xff, 0xff]);
    assert!(e.to_string().contains("over the limit"), "{e}");
    let e = hello_against("json", frames::encode(FrameKind::Control, b"{not json"));
    assert!(matches!(e, ClientError::Proto(_)), "{e:?}");
    let e = hello_against("order", proto::control(&Reply::Started { pid: 1 }));
    assert!(e.to_string().contains("expected a hello"), "{e}");
    let e = hello_against("output", frames::encode(FrameKind::Stdout, b"early"));
    assert!(e.to_string().contains("before the process runs"), "{e}");
    let e = hello_against(
        "version",
        proto::control(&Reply::Hello {
            version: 2,
            agent: "future".into(),
        }),
    );
    assert!(e.to_string().contains("version 2"), "{e}");
    let e = hello_against("silent", Vec::new());
    assert!(matches!(e, ClientError::Timeout(_)), "{e:?}");
}

/// Random bytes as the agent's answers: the decoder and the parser refuse or accept, never panic.
#[test]
fn random_bytes_from_a_guest_never_panic_the_host_decoder() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Often a plausible header, so the payload parsers are reached too.
        if next() % 2 == 0 && !bytes.is_empty() {
            bytes[0] = FrameKind::Control as u8;
            let body = br#"{"op":"hello","version":1,"agent":"x"}"#;
            let cut = (next() as usize) % body.len();
            let mut f = frames::encode(FrameKind::Control, &body[..cut]);
            f.extend(&bytes);
            bytes = f;
        }
        let mut d = frames::Decoder::default();
        d.push(&bytes);
        while let Ok(Some((kind, payload))) = d.next_frame() {
            if kind == FrameKind::Control {
                if let Ok(r) = proto::parse_reply(&payload) {
                    let _ = proto::check_hello(&r);
                }
            }
            let _ = frames::decode_exit(&payload);
        }
    }
}
