//! What a guest can send the host: bytes that the host's frame decoder splits and whose control frames it
//! parses as agent replies. A panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vessel_agent::proto;
use vessel_api::frames::{self, FrameKind};

fuzz_target!(|data: &[u8]| {
    let mut d = frames::Decoder::default();
    // Fed in two parts, as reads split them.
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    d.push(&data[..cut]);
    d.push(&data[cut..]);
    while let Ok(Some((kind, payload))) = d.next_frame() {
        match kind {
            FrameKind::Control => {
                if let Ok(r) = proto::parse_reply(&payload) {
                    let _ = proto::check_hello(&r);
                }
            }
            FrameKind::Exit => {
                let _ = frames::decode_exit(&payload);
            }
            _ => {}
        }
    }
});
