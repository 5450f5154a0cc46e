//! vesseld's REST API: `/1.0/...` JSON over HTTP/1.1, served on a unix socket. Handlers only translate
//! between HTTP and the [`Manager`]; errors become one JSON line with the right status.

pub mod check;
mod images;
mod instances;
mod metrics;
mod networks;
pub mod openapi;
mod operations;
mod streams;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use vessel_api::ErrorBody;

pub use metrics::Metrics;

use crate::manager::{Manager, ManagerError};
use crate::store::StoreError;

#[derive(Clone)]
pub struct AppState {
    pub mgr: Arc<Manager>,
    pub metrics: Arc<Metrics>,
    /// Bearer tokens accepted from TCP clients.
    pub tokens: Arc<crate::tls::Tokens>,
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

/// An error message as one line: control characters a request smuggled in (serde quotes unknown field
/// names, names echo back) are escaped.
pub fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: one_line(&message.into()),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> ApiError {
        let status = match &e {
            ManagerError::Invalid(_) => StatusCode::BAD_REQUEST,
            ManagerError::NotFound(_) => StatusCode::NOT_FOUND,
            ManagerError::Conflict(_) | ManagerError::Cancelled(_) => StatusCode::CONFLICT,
            ManagerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ManagerError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
            ManagerError::Store(StoreError::Ambiguous(_)) => StatusCode::BAD_REQUEST,
            ManagerError::Store(StoreError::NameTaken(_) | StoreError::Conflict(_)) => StatusCode::CONFLICT,
            ManagerError::Store(StoreError::Invalid(_)) => StatusCode::BAD_REQUEST,
            ManagerError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        // serde's message names the field and position; axum's wrapper adds nothing a person needs.
        let detail = std::error::Error::source(&e)
            .and_then(|s| s.source())
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.body_text());
        ApiError::bad_request(format!("Invalid request body: {detail}"))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// An image name as one path segment: everything but unreserved characters percent-encoded (`/` and `:`
/// included), as clients must send it.
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The routes; every request also counts in [`Metrics`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/1.0", get(instances::info))
        .route("/1.0/instances", get(instances::list).post(instances::create))
        .route(
            "/1.0/instances/{name}",
            get(instances::inspect)
                .delete(instances::delete)
                .patch(instances::update),
        )
        .route("/1.0/instances/{name}/state", put(instances::change_state))
        .route("/1.0/instances/{name}/rename", post(instances::rename))
        .route("/1.0/instances/{name}/wait", post(instances::wait))
        .route("/1.0/instances/{name}/top", get(instances::top))
        .route("/1.0/instances/{name}/stats", get(streams::stats))
        .route("/1.0/instances/{name}/logs", get(streams::logs))
        .route("/1.0/instances/{name}/attach", post(streams::attach))
        .route("/1.0/instances/{name}/exec", post(streams::exec))
        .route("/1.0/events", get(streams::events))
        .route("/1.0/images", get(images::list))
        .route("/1.0/images/pull", post(images::pull))
        .route("/1.0/images/prune", post(images::prune))
        .route("/1.0/images/{name}", get(images::inspect).delete(images::remove))
        .route("/1.0/images/{name}/tag", post(images::tag))
        .route("/1.0/images/{name}/push", post(images::push))
        .route("/1.0/networks", get(networks::list).post(networks::create))
        .route(
            "/1.0/networks/{name}",
            get(networks::inspect).delete(networks::delete),
        )
        .route("/1.0/networks/{name}/connect", post(networks::connect))
        .route("/1.0/networks/{name}/disconnect", post(networks::disconnect))
        .route("/1.0/operations", get(operations::list))
        .route(
            "/1.0/operations/{id}",
            get(operations::show).delete(operations::cancel),
        )
        .route("/1.0/operations/{id}/wait", get(operations::wait))
        .route("/metrics", get(metrics::render))
        .route("/1.0/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "No such API endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::tls::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        .with_state(state)
}
