//! Test harness: bundles built from busybox-static, runtimes under test, and helpers to drive them.
//!
//! Every test body runs against both `vessel-runtime` and `runc` through [`conformance!`], so a
//! difference between the two shows up as `area::vessel` failing next to `area::runc` passing.

pub mod bundle;
pub mod caps;
pub mod host;
pub mod interop;
pub mod runtime;
pub mod tempdir;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use bundle::{default_config, Bundle};
pub use runtime::{Container, Kind, Out, Runtime};
pub use serde_json::{json, Value};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A process-wide counter for unique names.
pub fn next_counter() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Defines `mod $name { #[test] fn vessel(); #[test] fn runc(); }` running the same body against
/// each runtime.
///
/// ```ignore
/// conformance!(hostname, |rt: &Runtime| {
///     let mut b = Bundle::new();
///     b.hostname("box").args(&["hostname"]);
///     assert_eq!(rt.run_ok(&b).stdout.trim(), "box");
/// });
/// ```
#[macro_export]
macro_rules! conformance {
    ($name:ident, $body:expr) => {
        $crate::conformance!(@both $name, None, $body);
    };
    // `runc_differs = "why"`: Debian's runc 1.1.5 is known to break this rule of the runtime-spec (or cannot
    // on this host). Its variant then asserts that the difference is still there, printing why, and fails
    // once runc conforms, so the known-difference list stays true.
    ($name:ident, runc_differs = $why:expr, $body:expr) => {
        $crate::conformance!(@both $name, Some($why), $body);
    };
    (@both $name:ident, $differs:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn vessel() {
                let rt = $crate::Runtime::vessel().with_area(stringify!($name));
                let body: fn(&$crate::Runtime) = $body;
                body(&rt);
            }

            #[test]
            fn runc() {
                let rt = $crate::Runtime::runc().with_area(stringify!($name));
                let body: fn(&$crate::Runtime) = $body;
                let differs: Option<&str> = $differs;
                match differs {
                    None => body(&rt),
                    Some(why) => $crate::expect_runc_difference(stringify!($name), why, || body(&rt)),
                }
            }
        }
    };
}

/// Runs a runc variant that is known to fail; passes (printing the reason) while it still fails.
pub fn expect_runc_difference(name: &str, why: &str, body: impl FnOnce()) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    match outcome {
        Err(_) => eprintln!("KNOWN DIFFERENCE {name}: runc fails this test: {why}"),
        Ok(()) => panic!("{name}: runc now passes; remove runc_differs (it said: {why})"),
    }
}

/// Polls `cond` until true or `timeout` passes; returns the last value.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits up to 10 s for a file to exist.
pub fn wait_for_file(p: &Path) -> bool {
    wait_until(Duration::from_secs(10), || p.exists())
}

/// What is left on the host of a container: used by failure and leak checks.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub mounts: Vec<String>,
    pub cgroups: Vec<String>,
    pub state: Vec<String>,
    pub processes: Vec<String>,
}

impl Leftovers {
    /// Mounts mentioning the bundle, cgroup dirs of its `cgroupsPath`, entries under `--root`
    /// and processes whose cwd or root is in the bundle.
    pub fn of(rt: &Runtime, b: &Bundle) -> Leftovers {
        Self::of_paths(rt, b.path(), &b.cgroups_path())
    }

    pub fn of_paths(rt: &Runtime, bundle: &Path, cgroups_path: &str) -> Leftovers {
        let cg = if cgroups_path.is_empty() {
            Vec::new()
        } else {
            host::existing_cgroup_dirs(cgroups_path)
        };
        Leftovers {
            mounts: host::mounts_mentioning(bundle),
            cgroups: cg.iter().map(|p| p.display().to_string()).collect(),
            state: rt.state_entries(),
            processes: host::pids_using(bundle)
                .into_iter()
                .map(|(p, d)| format!("{p} {d}"))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.state.is_empty()
            && self.processes.is_empty()
    }

    /// Panics with a list of what was left behind.
    pub fn assert_none(&self, what: &str) {
        assert!(self.is_empty(), "{what}: left behind {self:#?}");
    }
}

/// Waits (up to 5 s) for the bundle's container leftovers to disappear, then asserts there are none.
/// Processes and cgroups of a killed container can take a moment to go.
pub fn assert_nothing_left(rt: &Runtime, b: &Bundle, what: &str) {
    let mut last = Leftovers::default();
    let clean = wait_until(Duration::from_secs(5), || {
        last = Leftovers::of(rt, b);
        last.is_empty()
    });
    if !clean {
        last.assert_none(what);
    }
}
