//! vesseld's API as data: the request and response bodies of `/1.0/...` (shared by the daemon, the `vessel`
//! CLI and, later, the Docker-compatible layer) and the framing of the byte streams that attach and exec
//! carry over an upgraded connection.

pub mod frames;
pub mod images;
pub mod networks;
pub mod operations;
pub mod time;
pub mod types;

pub use images::*;
pub use networks::*;
pub use operations::*;
pub use types::*;

/// The API's version prefix.
pub const API_PREFIX: &str = "/1.0";
