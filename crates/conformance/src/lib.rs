//! Test harness: bundles built from busybox-static, runtimes under test, and helpers to drive them.
