//! The manager's errors, each mapped to one HTTP status by the API.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// 400: the request cannot be done as asked.
    #[error("{0}")]
    Invalid(String),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 409: the instance's state or a name in use forbids it.
    #[error("{0}")]
    Conflict(String),
    /// 500: the host failed us.
    #[error("{0}")]
    Internal(String),
    /// An operation stopped because a client cancelled it.
    #[error("{0}")]
    Cancelled(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<super::bundle::BundleError> for ManagerError {
    fn from(e: super::bundle::BundleError) -> ManagerError {
        ManagerError::Invalid(e.to_string())
    }
}
