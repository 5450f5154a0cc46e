//! cgroup v2 (the unified hierarchy): one file per controller where the files differ from v1. pids and rdma use
//! the same files on both versions and live in `v1`.

pub(crate) mod cpu;
pub(crate) mod create;
pub(crate) mod freezer;
pub(crate) mod hugetlb;
pub(crate) mod io;
pub(crate) mod memory;
pub(crate) mod unified;
