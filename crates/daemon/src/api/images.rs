//! The image handlers. An image's name is one path segment, percent-encoded (`docker.io%2Flibrary%2Fbusybox%3Alatest`);
//! a unique id prefix works too.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use vessel_api::{
    ErrorBody, Image, ImageDetail, Operation, PruneResult, PullRequest, PushRequest, TagRequest,
};

use super::{ApiError, ApiResult, AppState};

#[utoipa::path(get, path = "/1.0/images", tag = "images", responses((status = 200, body = [Image])))]
pub async fn list(State(st): State<AppState>) -> ApiResult<Json<Vec<Image>>> {
    Ok(Json(st.mgr.images()?))
}

#[utoipa::path(get, path = "/1.0/images/{name}", tag = "images",
    params(("name" = String, Path, description = "Name (percent-encoded) or unique id prefix")),
    responses((status = 200, body = ImageDetail), (status = 404, body = ErrorBody)))]
pub async fn inspect(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<ImageDetail>> {
    Ok(Json(st.mgr.image(&name)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    #[serde(default)]
    force: Option<bool>,
}

#[utoipa::path(delete, path = "/1.0/images/{name}", tag = "images",
    params(("name" = String, Path), ("force" = Option<bool>, Query, description = "Remove the name even if instances were made from the image (they keep it)")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    st.mgr.remove_image(&name, q.force.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/1.0/images/{name}/tag", tag = "images", request_body = TagRequest,
    params(("name" = String, Path)),
    responses((status = 200, body = Image), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn tag(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<TagRequest>, JsonRejection>,
) -> ApiResult<Json<Image>> {
    let Json(req) = body?;
    Ok(Json(st.mgr.tag_image(&name, &req.name).await?))
}

#[utoipa::path(post, path = "/1.0/images/prune", tag = "images", responses((status = 200, body = PruneResult)))]
pub async fn prune(State(st): State<AppState>) -> ApiResult<Json<PruneResult>> {
    Ok(Json(st.mgr.prune_images().await?))
}

#[utoipa::path(post, path = "/1.0/images/pull", tag = "images", request_body = PullRequest,
    responses((status = 202, body = Operation, description = "The pull, as an operation whose result is the Image"),
              (status = 400, body = ErrorBody)))]
pub async fn pull(
    State(st): State<AppState>,
    body: Result<Json<PullRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    let Json(req) = body?;
    Ok((StatusCode::ACCEPTED, Json(st.mgr.pull(req)?)))
}

#[utoipa::path(post, path = "/1.0/images/{name}/push", tag = "images", request_body = PushRequest,
    params(("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn push(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<PushRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    let Json(req) = body?;
    Ok((StatusCode::ACCEPTED, Json(st.mgr.push(&name, req)?)))
}
