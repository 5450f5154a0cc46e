//! The instance handlers that answer with one JSON document.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use vessel_api::{
    ErrorBody, Info, Instance, InstanceConfig, InstanceUpdate, Operation, Rename, StateChange, Top,
    WaitResult,
};

use crate::manager::{Created, PullPolicy};

use super::{ApiError, ApiResult, AppState};

#[utoipa::path(get, path = "/1.0", tag = "daemon", responses((status = 200, body = Info)))]
pub async fn info(State(st): State<AppState>) -> ApiResult<Json<Info>> {
    let list = st.mgr.list()?;
    Ok(Json(Info {
        name: st.mgr.cfg.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: "1.0".into(),
        root: st.mgr.cfg.root.display().to_string(),
        pid: std::process::id(),
        instances: list.len() as u64,
        running: list.iter().filter(|i| i.state.status.is_active()).count() as u64,
        cgroup_parent: st.mgr.cfg.cgroup_parent(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Include instances that are not running.
    #[serde(default)]
    all: Option<bool>,
    /// `label=KEY[=VALUE]`, `status=S`, `name=SUBSTRING`, `id=PREFIX`, `kind=K`; repeatable as a
    /// comma-free list separated by '&' is not possible in one field, so several are joined with ';'.
    #[serde(default)]
    filter: Option<String>,
}

#[utoipa::path(get, path = "/1.0/instances", tag = "instances",
    params(("all" = Option<bool>, Query, description = "Include instances that are not running"),
           ("filter" = Option<String>, Query, description = "KEY=VALUE filters joined by ';': label=K[=V], status, name, id, kind")),
    responses((status = 200, body = [Instance]), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<Instance>>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filters = q
        .filter
        .as_deref()
        .map(parse_filters)
        .transpose()?
        .unwrap_or_default();
    let all = q.all.unwrap_or(false);
    let list = st
        .mgr
        .list()?
        .into_iter()
        .filter(|i| all || i.state.status.is_active())
        .filter(|i| filters.iter().all(|f| f.matches(i)))
        .collect();
    Ok(Json(list))
}

/// One `--filter` of `ps`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Label(String, Option<String>),
    Status(String),
    Name(String),
    Id(String),
    Kind(String),
}

impl Filter {
    fn matches(&self, i: &Instance) -> bool {
        match self {
            Filter::Label(k, v) => i
                .config
                .labels
                .get(k)
                .is_some_and(|x| v.as_ref().is_none_or(|v| v == x)),
            Filter::Status(s) => i.state.status.as_str() == s,
            Filter::Name(n) => i.name.contains(n.as_str()),
            Filter::Id(p) => i.id.starts_with(p.as_str()),
            Filter::Kind(k) => i.kind.to_string() == *k,
        }
    }
}

pub fn parse_filters(s: &str) -> ApiResult<Vec<Filter>> {
    s.split(';')
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (key, value) = f
                .split_once('=')
                .ok_or_else(|| ApiError::bad_request(format!("Invalid filter {f:?}: use KEY=VALUE")))?;
            Ok(match key {
                "label" => match value.split_once('=') {
                    Some((k, v)) => Filter::Label(k.into(), Some(v.into())),
                    None => Filter::Label(value.into(), None),
                },
                "status" => {
                    if vessel_api::Status::parse(value).is_none() {
                        return Err(ApiError::bad_request(format!("Invalid status filter {value:?}")));
                    }
                    Filter::Status(value.into())
                }
                "name" => Filter::Name(value.into()),
                "id" => Filter::Id(value.into()),
                "kind" => Filter::Kind(value.into()),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "Unknown filter {other:?}: use label, status, name, id or kind"
                    )))
                }
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    #[serde(default)]
    pull: Option<PullPolicy>,
}

#[utoipa::path(post, path = "/1.0/instances", tag = "instances", request_body = InstanceConfig,
    params(("pull" = Option<String>, Query, description = "missing (default): pull the image if it is not in the store; always; never")),
    responses((status = 201, body = Instance, description = "Made at once: the image was in the store"),
              (status = 202, body = Operation, description = "An operation that pulls the image, then makes the instance (its result)"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    q: Result<Query<CreateQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<InstanceConfig>, JsonRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Json(config) = body?;
    Ok(match st.mgr.create(config, q.pull.unwrap_or_default()).await? {
        Created::Now(inst) => (StatusCode::CREATED, Json(inst)).into_response(),
        Created::Later(op) => (StatusCode::ACCEPTED, Json(op)).into_response(),
    })
}

#[utoipa::path(get, path = "/1.0/instances/{name}", tag = "instances",
    params(("name" = String, Path, description = "Name, id or unique id prefix")),
    responses((status = 200, body = Instance), (status = 404, body = ErrorBody)))]
pub async fn inspect(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Instance>> {
    Ok(Json(st.mgr.with_networks(st.mgr.find(&name)?.instance)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    force: Option<bool>,
    #[serde(default, rename = "async")]
    run_async: Option<bool>,
}

#[utoipa::path(delete, path = "/1.0/instances/{name}", tag = "instances",
    params(("name" = String, Path), ("force" = Option<bool>, Query, description = "Kill a running instance first"),
           ("async" = Option<bool>, Query, description = "Answer at once with an operation that deletes it")),
    responses((status = 204), (status = 202, body = Operation), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let force = q.force.unwrap_or(false);
    if !q.run_async.unwrap_or(false) {
        st.mgr.delete(&name, force).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Refuse what would fail at once (no such instance) before answering 202.
    let inst = st.mgr.find(&name)?.instance;
    let mgr = st.mgr.clone();
    let id = inst.id.clone();
    let op = st.mgr.ops.start(
        "delete",
        format!("Deleting {}", inst.name),
        vec![format!("/1.0/instances/{}", inst.name)],
        move |h| async move {
            h.no_more_cancel()?;
            mgr.delete(&id, force).await?;
            Ok(None)
        },
    );
    Ok((StatusCode::ACCEPTED, Json(op)).into_response())
}

#[utoipa::path(patch, path = "/1.0/instances/{name}", tag = "instances", request_body = InstanceUpdate,
    params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<InstanceUpdate>, JsonRejection>,
) -> ApiResult<Json<Instance>> {
    let Json(u) = body?;
    Ok(Json(st.mgr.update(&name, u).await?))
}

#[utoipa::path(put, path = "/1.0/instances/{name}/state", tag = "instances", request_body = StateChange,
    params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn change_state(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<StateChange>, JsonRejection>,
) -> ApiResult<Json<Instance>> {
    let Json(change) = body?;
    Ok(Json(st.mgr.change_state(&name, &change).await?))
}

#[utoipa::path(post, path = "/1.0/instances/{name}/rename", tag = "instances", request_body = Rename,
    params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn rename(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<Rename>, JsonRejection>,
) -> ApiResult<Json<Instance>> {
    let Json(r) = body?;
    Ok(Json(st.mgr.rename(&name, &r.name)?))
}

#[utoipa::path(post, path = "/1.0/instances/{name}/wait", tag = "instances", params(("name" = String, Path)),
    responses((status = 200, body = WaitResult), (status = 404, body = ErrorBody)))]
pub async fn wait(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<WaitResult>> {
    Ok(Json(WaitResult {
        exit_code: st.mgr.wait(&name).await?,
    }))
}

#[utoipa::path(get, path = "/1.0/instances/{name}/top", tag = "instances", params(("name" = String, Path)),
    responses((status = 200, body = Top), (status = 409, body = ErrorBody)))]
pub async fn top(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Top>> {
    let mgr = st.mgr.clone();
    Ok(Json(
        tokio::task::spawn_blocking(move || mgr.top(&name))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_reject_unknown_keys() {
        let f = parse_filters("label=app=web;status=running").unwrap();
        assert_eq!(f[0], Filter::Label("app".into(), Some("web".into())));
        assert_eq!(f[1], Filter::Status("running".into()));
        assert!(parse_filters("colour=red").is_err());
        assert!(parse_filters("status=flying").is_err());
        assert!(parse_filters("label").is_err());
    }
}
