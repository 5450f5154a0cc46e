//! Registry client for the OCI distribution spec: pull images into the [`Store`](crate::store::Store) and
//! push them back out.
//!
//! - Authentication: anonymous, HTTP Basic, and bearer tokens (`WWW-Authenticate: Bearer realm=,service=,scope=`
//!   answered by the token endpoint, with the user's credentials as Basic auth when given).
//! - Manifests: OCI image manifests and indexes, Docker v2 schema 2 manifests and manifest lists; an index is
//!   resolved to the manifest for [`RegistryOptions::platform`]. Every manifest is verified against its digest
//!   (the one asked for, the one in the index, and the registry's `Docker-Content-Digest`). A Docker v2
//!   schema 2 manifest is stored as the equivalent OCI image manifest (OCI media types for config and layers,
//!   foreign layers as non-distributable ones; blobs and their digests unchanged, so the manifest digest in
//!   the store differs from the registry's): skopeo's `oci:` transport and other layout readers see only
//!   OCI-typed manifests.
//! - Blobs: downloaded in parallel ([`RegistryOptions::parallel`] threads), verified against their digest by
//!   the store before they become visible, resumed with `Range` requests where a previous attempt stopped (in
//!   this pull or an earlier one: the partial file lives in the store's tmp/).
//! - Push: existing blobs are skipped (`HEAD`), blobs of an image pulled from another repository of the same
//!   registry are mounted (`POST ?mount=&from=`), others are uploaded in one `PUT` or, when large, in chunks
//!   (`PATCH` with `Content-Range`), then the manifest is `PUT` under the tag.
//!
//! Nothing here becomes visible in the store before it is complete and verified: a failed pull leaves
//! `Store::list()` as it was (at most verified but unreferenced blobs, and partial files under tmp/).
//!
//! ```no_run
//! use vessel_image::reference::Reference;
//! use vessel_image::registry::{pull, RegistryOptions, TerminalProgress};
//! use vessel_image::store::Store;
//!
//! let store = Store::open("/var/lib/vessel".as_ref()).unwrap();
//! let reference = Reference::parse("localhost:5000/busybox:latest").unwrap();
//! let opts = RegistryOptions { insecure: true, ..RegistryOptions::default() };
//! let image = pull(&store, &reference, &opts, &TerminalProgress::new()).unwrap();
//! println!("{} {}", image.name, image.config);
//! ```

mod auth;
mod client;
mod convert;
mod error;
mod manifest;
mod parallel;
mod progress;
mod pull;
mod push;

use std::path::PathBuf;

use crate::reference::Reference;

pub use error::RegistryError;
pub use progress::{NoProgress, TerminalProgress};
pub use pull::pull;
pub use push::push;

/// "sha256:0123456789abcdef..." → "0123456789ab", for progress lines.
pub(crate) fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// Checks a reference against the distribution spec's grammar before it is sent anywhere: repository
/// components of lowercase letters and digits joined by `.`, `_`, `__` or dashes; tags `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn check_reference(r: &Reference) -> Result<(), RegistryError> {
    let invalid = |reason: String| RegistryError::NameInvalid {
        image: r.to_string(),
        registry: r.registry.clone(),
        reason,
    };
    if r.repository.len() > 255
        || !r
            .repository
            .split('/')
            .all(crate::reference::valid_path_component)
    {
        return Err(invalid(format!(
            "repository {:?} is not a valid name (lowercase letters and digits, separated by '.', '_', '__', '-' or '/')",
            r.repository
        )));
    }
    if let Some(tag) = &r.tag {
        if !crate::reference::valid_tag(tag) {
            return Err(invalid(format!("tag {tag:?} is not a valid tag")));
        }
    }
    Ok(())
}

/// How to talk to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Allow plain HTTP, or HTTPS without certificate verification. HTTPS (unverified) is tried first, HTTP when
    /// the registry does not speak TLS.
    pub insecure: bool,
    /// PEM file with the CA certificate(s) that sign the registry's certificate. When set, these are the only
    /// roots trusted for this registry (instead of the built-in Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// Credentials, sent as HTTP Basic auth to the registry or to its token endpoint.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Platform picked from an image index / manifest list: (os, architecture), e.g. ("linux", "amd64"). The
    /// architecture may carry a variant: "arm64/v8".
    pub platform: (String, String),
    /// How many blobs are transferred at once (at least 1).
    pub parallel: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: false,
            ca_file: None,
            username: None,
            password: None,
            platform: ("linux".to_string(), "amd64".to_string()),
            parallel: 3,
        }
    }
}

/// Receives the progress of a pull or push. `digest` is the blob's "sha256:..." digest; `size` its total size
/// in bytes; `bytes` in [`Progress::layer_advance`] is an increment (bytes transferred since the last call).
/// All calls come from the thread that called `pull` / `push`, never concurrently.
pub trait Progress {
    fn layer_start(&self, digest: &str, size: u64);
    fn layer_advance(&self, digest: &str, bytes: u64);
    fn layer_done(&self, digest: &str);
    fn message(&self, line: &str);
    /// Asked between steps and while blobs transfer: true ends the pull or push with
    /// [`RegistryError::Cancelled`] at the next chunk (partial blobs stay, so a later pull resumes them).
    fn cancelled(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(repository: &str, tag: Option<&str>) -> Reference {
        Reference {
            registry: "localhost:5000".into(),
            repository: repository.into(),
            tag: tag.map(str::to_string),
            digest: None,
        }
    }

    #[test]
    fn reference_grammar() {
        for ok in ["busybox", "library/busybox", "a/b-c/d__e/f.g", "x--y", "0abc"] {
            assert!(check_reference(&r(ok, Some("v1.2-rc_3"))).is_ok(), "{ok}");
        }
        for bad in [
            "Busybox",
            "a//b",
            "a/",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "Bad_Name/..",
            "",
        ] {
            let err = check_reference(&r(bad, None)).unwrap_err();
            assert!(matches!(err, RegistryError::NameInvalid { .. }), "{bad}");
        }
        for bad in ["", ".x", "-x", "a:b", &"x".repeat(129)] {
            assert!(check_reference(&r("ok", Some(bad))).is_err(), "{bad}");
        }
    }
}
