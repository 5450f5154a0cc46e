//! The registry client's errors: each names the image and the cause.

use std::path::PathBuf;

use crate::store::StoreError;

/// Why a pull or push failed. Every variant names the image (the reference as the user wrote it, normalised).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Cannot read the CA file {path} for {image}: {reason}")]
    CaFile {
        image: String,
        path: PathBuf,
        reason: String,
    },

    #[error("Cannot reach registry {registry} for {image}: {reason}")]
    Unreachable {
        image: String,
        registry: String,
        reason: String,
    },

    #[error("Access to {image} was denied by {registry}: {reason}")]
    Unauthorized {
        image: String,
        registry: String,
        reason: String,
    },

    #[error("Image {image} does not exist: registry {registry} has no repository {repository}")]
    NameUnknown {
        image: String,
        registry: String,
        repository: String,
    },

    #[error("Image {image} does not exist: registry {registry} has no tag or digest {target} in repository {repository}")]
    ManifestUnknown {
        image: String,
        registry: String,
        repository: String,
        target: String,
    },

    #[error("Invalid image name {image} (registry {registry}): {reason}")]
    NameInvalid {
        image: String,
        registry: String,
        reason: String,
    },

    #[error("Registry {registry} answered {status} to {what} for {image}: {detail}")]
    Status {
        image: String,
        registry: String,
        what: String,
        status: u16,
        detail: String,
    },

    #[error("Registry {registry} sent a bad answer to {what} for {image}: {reason}")]
    BadResponse {
        image: String,
        registry: String,
        what: String,
        reason: String,
    },

    #[error("Image {image} has no manifest for platform {platform} (it has: {available})")]
    NoPlatform {
        image: String,
        platform: String,
        available: String,
    },

    #[error("Image {image} uses {what} of unsupported media type {media_type}")]
    UnsupportedMediaType {
        image: String,
        what: String,
        media_type: String,
    },

    #[error("Digest mismatch in {image}: {what} has digest {actual} instead of {expected}")]
    DigestMismatch {
        image: String,
        what: String,
        expected: String,
        actual: String,
    },

    #[error("Download of {blob} for {image} was cut short after {received} of {expected} bytes: {reason}")]
    Truncated {
        image: String,
        blob: String,
        received: u64,
        expected: u64,
        reason: String,
    },

    #[error("Upload of {blob} for {image} failed: {reason}")]
    Upload {
        image: String,
        blob: String,
        reason: String,
    },

    #[error("Not enough disk space in the image store for {image}: {reason}")]
    DiskFull { image: String, reason: String },

    #[error("Cannot write {blob} of {image} to the image store: {source}")]
    StoreWrite {
        image: String,
        blob: String,
        #[source]
        source: std::io::Error,
    },

    #[error("Image store failed while handling {image}: {source}")]
    Store {
        image: String,
        #[source]
        source: StoreError,
    },

    #[error("No local image {image}: {source}")]
    LocalImage {
        image: String,
        #[source]
        source: StoreError,
    },

    #[error("Local image {image} is damaged: {reason}")]
    LocalDamaged { image: String, reason: String },

    #[error("The transfer of {image} was cancelled")]
    Cancelled { image: String },
}

impl RegistryError {
    /// Wraps a store error, telling a full disk apart from other failures.
    pub(crate) fn store(image: &str, source: StoreError) -> RegistryError {
        if is_disk_full(&source) {
            RegistryError::DiskFull {
                image: image.to_string(),
                reason: source.to_string(),
            }
        } else {
            RegistryError::Store {
                image: image.to_string(),
                source,
            }
        }
    }

    /// Wraps a failed write of a blob into the store.
    pub(crate) fn store_write(image: &str, blob: &str, source: std::io::Error) -> RegistryError {
        if is_disk_full(&source) {
            RegistryError::DiskFull {
                image: image.to_string(),
                reason: format!("writing {blob}: {source}"),
            }
        } else {
            RegistryError::StoreWrite {
                image: image.to_string(),
                blob: blob.to_string(),
                source,
            }
        }
    }
}

/// True when an error (or one of its causes) is ENOSPC or EDQUOT.
pub(crate) fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                return true;
            }
        }
        current = e.source();
    }
    false
}
