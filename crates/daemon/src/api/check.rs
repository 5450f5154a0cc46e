//! What a request gets checked for before any state is touched, callable without a daemon: the fuzz target
//! (`fuzz/`) and tests drive these with arbitrary input; the handlers use the same functions.

use vessel_api::frames::Decoder;
use vessel_api::{ExecConfig, InstanceConfig, InstanceUpdate, PullRequest, Rename, StateChange, TagRequest};

/// The request inputs that are parsed and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    CreateBody,
    StateBody,
    UpdateBody,
    RenameBody,
    ExecBody,
    /// `?filter=` of a list.
    Filters,
    /// `?since=` of logs.
    Since,
    /// Frames of an attach or exec stream.
    Frames,
    PullBody,
    TagBody,
}

impl Input {
    pub const ALL: [Input; 10] = [
        Input::CreateBody,
        Input::StateBody,
        Input::UpdateBody,
        Input::RenameBody,
        Input::ExecBody,
        Input::Filters,
        Input::Since,
        Input::Frames,
        Input::PullBody,
        Input::TagBody,
    ];
}

/// Parse and validate `bytes` as `input`: `Err` with the one-line message a client would get.
pub fn check(input: Input, bytes: &[u8]) -> Result<(), String> {
    check_raw(input, bytes).map_err(|m| super::one_line(&m))
}

fn check_raw(input: Input, bytes: &[u8]) -> Result<(), String> {
    match input {
        Input::CreateBody => {
            let mut c: InstanceConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            crate::manager::validate_create(&mut c).map_err(|e| e.to_string())
        }
        Input::StateBody => {
            let s: StateChange = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            if let Some(sig) = &s.signal {
                vessel_runtime::container::parse_signal(sig).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Input::UpdateBody => {
            let u: InstanceUpdate = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            if let Some(l) = &u.limits {
                crate::manager::bundle::validate_limits(l).map_err(|e| e.to_string())?;
            }
            if let Some(p) = &u.restart {
                p.validate()?;
            }
            Ok(())
        }
        Input::RenameBody => {
            let r: Rename = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            crate::manager::validate_name(&r.name).map_err(|e| e.to_string())
        }
        Input::ExecBody => {
            let _: ExecConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            Ok(())
        }
        Input::Filters => {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            super::instances::parse_filters(text)
                .map(|_| ())
                .map_err(|e| e.message)
        }
        Input::Since => {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            super::streams::parse_since(text)
                .map(|_| ())
                .map_err(|e| e.message)
        }
        Input::Frames => {
            let mut d = Decoder::default();
            d.push(bytes);
            while d.next_frame().map_err(|e| e.to_string())?.is_some() {}
            Ok(())
        }
        Input::PullBody => {
            let p: PullRequest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            crate::manager::validate_pull(&p).map_err(|e| e.to_string())
        }
        Input::TagBody => {
            let t: TagRequest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            vessel_image::store::normalize_name(&t.name)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inputs_are_errors_with_a_message() {
        assert!(
            check(Input::CreateBody, br#"{"image":"x","limits":{"memory":1}}"#)
                .unwrap_err()
                .contains("minimum")
        );
        assert!(check(Input::CreateBody, br#"{"image":"busybox"}"#).is_ok());
        assert!(check(Input::StateBody, br#"{"action":"kill","signal":"SIGNOPE"}"#).is_err());
        assert!(check(Input::RenameBody, br#"{"name":"../x"}"#).is_err());
        assert!(check(Input::Since, b"10q").is_err());
        // Fuzz findings: seconds beyond what a Duration holds, and an hour count that overflows.
        assert!(check(Input::Since, b"844077884407777777776667777777666").is_err());
        assert!(check(Input::Since, b"inf").is_err());
        assert!(
            check(Input::Since, b"18446744073709551615h").is_ok(),
            "an hour count that overflows means since the epoch"
        );
        assert!(check(Input::Frames, &[8, 0, 0, 0, 0]).is_err());
        assert!(check(Input::PullBody, br#"{"reference":"UPPER:::"}"#).is_err());
        assert!(check(
            Input::PullBody,
            br#"{"reference":"a/b","registry":{"platform":"linux"}}"#
        )
        .is_err());
        assert!(check(
            Input::PullBody,
            br#"{"reference":"a/b","registry":{"platform":"linux/arm64/v8"}}"#
        )
        .is_ok());
        assert!(check(Input::TagBody, br#"{"name":"Bad Name"}"#).is_err());
        // Fuzz finding: serde quotes an unknown field's name, newline and all; the answer stays one line.
        let msg = check(Input::PullBody, b"{\"referen\n\\  r {\"").unwrap_err();
        assert!(!msg.contains('\n'), "{msg}");
        // Not UTF-8 nor JSON; for frames, an incomplete header waits for more bytes.
        for input in Input::ALL.into_iter().filter(|i| *i != Input::Frames) {
            assert!(check(input, b"\xff\xfe").is_err(), "{input:?}");
        }
        assert!(check(Input::Frames, b"\xff\xfe").is_ok());
    }
}
