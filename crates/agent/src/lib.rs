//! vessel-agent: the guest side of a VM instance made from an image. As the guest's PID 1 ([`init`]) it
//! mounts the instance's root and serves the host over vsock ([`server`]); each connection is a session
//! ([`session`]) that runs one process and relays its stdio, terminal, signals and exit status in the frames
//! of [`proto`]. Run as a normal process (`--listen unix:PATH`) it serves the same sessions on a unix socket,
//! which is how its process handling is tested and measured on a host.

pub mod client;
pub mod init;
pub mod network;
pub mod proto;
pub mod server;
pub mod session;
pub mod stats;
