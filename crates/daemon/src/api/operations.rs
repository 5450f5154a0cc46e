//! The operation handlers: list, show, wait (long poll) and cancel.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use vessel_api::{ErrorBody, Operation};

use super::{ApiError, ApiResult, AppState};

/// The longest a single wait is held open.
const MAX_WAIT: f64 = 600.0;

#[utoipa::path(get, path = "/1.0/operations", tag = "operations", responses((status = 200, body = [Operation])))]
pub async fn list(State(st): State<AppState>) -> Json<Vec<Operation>> {
    Json(st.mgr.ops.list())
}

#[utoipa::path(get, path = "/1.0/operations/{id}", tag = "operations",
    params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 404, body = ErrorBody)))]
pub async fn show(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Operation>> {
    Ok(Json(st.mgr.ops.get(&id)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    #[serde(default)]
    timeout: Option<f64>,
}

#[utoipa::path(get, path = "/1.0/operations/{id}/wait", tag = "operations",
    params(("id" = String, Path),
           ("timeout" = Option<f64>, Query, description = "Seconds to wait at most (default and bound 600); the operation is returned as it is then")),
    responses((status = 200, body = Operation), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn wait(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Operation>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let secs = q.timeout.unwrap_or(MAX_WAIT);
    if !secs.is_finite() || secs < 0.0 {
        return Err(ApiError::bad_request(format!(
            "Bad timeout {secs}: seconds, 0 or more"
        )));
    }
    let timeout = Duration::from_secs_f64(secs.min(MAX_WAIT));
    Ok(Json(st.mgr.ops.wait(&id, timeout).await?))
}

#[utoipa::path(delete, path = "/1.0/operations/{id}", tag = "operations",
    params(("id" = String, Path)),
    responses((status = 202, body = Operation, description = "Asked to stop; it ends as cancelled"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(st.mgr.ops.cancel(&id)?)))
}
