//! Runs blob transfers on a few threads. Progress events travel back over a channel, so the caller's
//! [`Progress`] is only ever called from the caller's thread (it need not be `Sync`). The first error stops
//! the others at their next chunk and is the one returned.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use super::{Progress, RegistryError};

enum Event {
    Start(String, u64),
    Advance(String, u64),
    Done(String),
    Message(String),
}

/// A worker's handle: reports progress, tells whether the transfer was called off.
pub(crate) struct Reporter<'a> {
    tx: mpsc::Sender<Event>,
    cancel: &'a AtomicBool,
}

impl Reporter<'_> {
    pub fn start(&self, digest: &str, size: u64) {
        let _ = self.tx.send(Event::Start(digest.to_string(), size));
    }
    pub fn advance(&self, digest: &str, bytes: u64) {
        if bytes > 0 {
            let _ = self.tx.send(Event::Advance(digest.to_string(), bytes));
        }
    }
    pub fn done(&self, digest: &str) {
        let _ = self.tx.send(Event::Done(digest.to_string()));
    }
    pub fn message(&self, line: String) {
        let _ = self.tx.send(Event::Message(line));
    }
    /// True once another transfer failed: stop and return any error (it is not reported).
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// How often the caller's thread asks [`Progress::cancelled`] while no event arrives.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Calls `job` for every item on up to `parallel` threads. `cancelled` makes the error for a transfer the
/// caller called off (the workers' own errors then say only that they were stopped).
pub(crate) fn run<T, F>(
    items: &[T],
    parallel: usize,
    progress: &dyn Progress,
    cancelled: impl FnOnce() -> RegistryError,
    job: F,
) -> Result<(), RegistryError>
where
    T: Sync,
    F: Fn(&T, &Reporter) -> Result<(), RegistryError> + Sync,
{
    if items.is_empty() {
        return Ok(());
    }
    let threads = parallel.clamp(1, items.len());
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let (tx, rx) = mpsc::channel::<Event>();
    let mut called_off = false;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let reporter = Reporter {
                tx: tx.clone(),
                cancel: &cancel,
            };
            let (next, cancel, first_error, job) = (&next, &cancel, &first_error, &job);
            scope.spawn(move || loop {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                if let Err(e) = job(item, &reporter) {
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() && !cancel.load(Ordering::Relaxed) {
                        *slot = Some(e);
                    }
                    cancel.store(true, Ordering::Relaxed);
                    return;
                }
            });
        }
        drop(tx);
        // Ends when every worker has dropped its sender; a quiet transfer still looks at `cancelled` often.
        loop {
            match rx.recv_timeout(CANCEL_POLL) {
                Ok(Event::Start(d, size)) => progress.layer_start(&d, size),
                Ok(Event::Advance(d, n)) => progress.layer_advance(&d, n),
                Ok(Event::Done(d)) => progress.layer_done(&d),
                Ok(Event::Message(line)) => progress.message(&line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !called_off && progress.cancelled() {
                called_off = true;
                cancel.store(true, Ordering::Relaxed);
            }
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        // A worker's error after the caller called it off is the cancel's doing.
        _ if called_off => Err(cancelled()),
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Not `Sync`: progress is only ever called from the calling thread.
    #[derive(Default)]
    struct Log(RefCell<Vec<String>>);

    impl Progress for Log {
        fn layer_start(&self, digest: &str, size: u64) {
            self.0.borrow_mut().push(format!("start {digest} {size}"));
        }
        fn layer_advance(&self, digest: &str, bytes: u64) {
            self.0.borrow_mut().push(format!("advance {digest} {bytes}"));
        }
        fn layer_done(&self, digest: &str) {
            self.0.borrow_mut().push(format!("done {digest}"));
        }
        fn message(&self, line: &str) {
            self.0.borrow_mut().push(line.to_string());
        }
    }

    fn called_off() -> RegistryError {
        RegistryError::Cancelled { image: "img".into() }
    }

    /// Says "cancelled" once `after` advances have been seen.
    struct CancelAfter {
        seen: std::cell::Cell<u32>,
        after: u32,
    }

    impl Progress for CancelAfter {
        fn layer_start(&self, _: &str, _: u64) {}
        fn layer_advance(&self, _: &str, _: u64) {
            self.seen.set(self.seen.get() + 1);
        }
        fn layer_done(&self, _: &str) {}
        fn message(&self, _: &str) {}
        fn cancelled(&self) -> bool {
            self.seen.get() >= self.after
        }
    }

    #[test]
    fn a_caller_that_calls_it_off_stops_every_worker_and_gets_cancelled() {
        let items: Vec<usize> = (0..4).collect();
        let chunks = AtomicUsize::new(0);
        let progress = CancelAfter {
            seen: std::cell::Cell::new(0),
            after: 3,
        };
        let err = run(&items, 2, &progress, called_off, |i, r| {
            // Endless transfers: only the cancel ends them.
            loop {
                if r.cancelled() {
                    return Err(failure(*i));
                }
                chunks.fetch_add(1, Ordering::Relaxed);
                r.advance("d", 1);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
        .unwrap_err();
        assert!(matches!(err, RegistryError::Cancelled { .. }), "{err}");
        assert!(chunks.load(Ordering::Relaxed) >= 3);
    }

    fn failure(i: usize) -> RegistryError {
        RegistryError::Upload {
            image: "img".into(),
            blob: format!("b{i}"),
            reason: "boom".into(),
        }
    }

    #[test]
    fn runs_every_item_and_forwards_progress() {
        let items: Vec<usize> = (0..20).collect();
        let log = Log::default();
        run(&items, 4, &log, called_off, |i, r| {
            r.start(&format!("d{i}"), 10);
            r.advance(&format!("d{i}"), 10);
            r.advance(&format!("d{i}"), 0);
            r.done(&format!("d{i}"));
            Ok(())
        })
        .unwrap();
        let log = log.0.into_inner();
        assert_eq!(log.len(), 60);
        for i in 0..20 {
            let start = log.iter().position(|l| *l == format!("start d{i} 10")).unwrap();
            let done = log.iter().position(|l| *l == format!("done d{i}")).unwrap();
            assert!(start < done);
        }
    }

    #[test]
    fn first_error_wins_and_stops_the_rest() {
        let items: Vec<usize> = (0..50).collect();
        let ran = AtomicUsize::new(0);
        let err = run(&items, 3, &Log::default(), called_off, |i, r| {
            ran.fetch_add(1, Ordering::Relaxed);
            if *i == 5 {
                return Err(failure(*i));
            }
            if r.cancelled() {
                return Err(failure(1000));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("b5"), "{err}");
        assert!(ran.load(Ordering::Relaxed) < 50);
        assert!(run(&[] as &[usize], 3, &NoopProgress, called_off, |_, _| Ok(())).is_ok());
    }

    struct NoopProgress;
    impl Progress for NoopProgress {
        fn layer_start(&self, _: &str, _: u64) {}
        fn layer_advance(&self, _: &str, _: u64) {}
        fn layer_done(&self, _: &str) {}
        fn message(&self, _: &str) {}
    }
}
