//! Fuzz what vesseld does with a request before it touches any state: the JSON bodies of create, state,
//! update, rename and exec with their validation, list filters, log `since`, and attach/exec stream frames.
//! Byte 0 picks the input; the rest is the input. Every outcome must be Ok or an Err with a one-line
//! message; a panic is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vessel_daemon::api::check::{check, Input};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let input = Input::ALL[sel as usize % Input::ALL.len()];
    if let Err(msg) = check(input, rest) {
        assert!(!msg.contains('\n'), "{input:?}: a message of several lines: {msg}");
    }
});
