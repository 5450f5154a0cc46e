//! Feeding the VMM's stdin to a guest console (COM1 or virtio-console) from a thread of its own.

use std::io::Read;

/// Reads `input` until its end and hands each chunk to `feed`, which returns how many bytes the
/// device took; while a device's buffer is full the thread waits for the guest to drain it.
pub fn spawn_input_feed(
    mut feed: impl FnMut(&[u8]) -> usize + Send + 'static,
    mut input: impl Read + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Device);
            let mut buf = [0u8; 64];
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let taken = feed(pending);
                    pending = &pending[taken..];
                    if taken == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            }
        })
}
