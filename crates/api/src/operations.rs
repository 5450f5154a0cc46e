//! Long work as an asynchronous operation: `POST` answers 202 with an [`Operation`], which a client polls
//! (`GET /1.0/operations/ID`), waits on (`GET /1.0/operations/ID/wait?timeout=S`) or cancels
//! (`DELETE /1.0/operations/ID`).

use serde::{Deserialize, Serialize};

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OperationStatus {
    Running,
    Success,
    Failure,
    Cancelled,
}

impl OperationStatus {
    pub fn is_done(self) -> bool {
        self != OperationStatus::Running
    }
}

impl std::fmt::Display for OperationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OperationStatus::Running => "running",
            OperationStatus::Success => "success",
            OperationStatus::Failure => "failure",
            OperationStatus::Cancelled => "cancelled",
        })
    }
}

/// How far an operation has come. Byte counts cover the blobs a pull transfers (blobs already in the store
/// count as done at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperationProgress {
    /// What it is doing now, for people ("Pulling …", "Creating the instance").
    pub stage: String,
    pub blobs_done: u32,
    pub blobs_total: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// One asynchronous operation. Finished ones are kept for a while (see `vesseld --help`) so that a client
/// that comes back late still learns the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Operation {
    /// 32 hex digits.
    pub id: String,
    /// pull, push, create, delete.
    pub kind: String,
    pub description: String,
    pub status: OperationStatus,
    pub created_at: String,
    pub updated_at: String,
    /// The API paths of what it works on, e.g. `/1.0/images/NAME` or `/1.0/instances/NAME`.
    pub resources: Vec<String>,
    pub progress: OperationProgress,
    /// On success: the made thing (an Image or an Instance) or null.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub result: Option<serde_json::Value>,
    /// On failure: why, in one line.
    #[serde(default)]
    pub error: Option<String>,
    pub may_cancel: bool,
}
