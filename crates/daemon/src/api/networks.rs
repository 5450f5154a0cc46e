//! The network handlers: `/1.0/networks[/NAME[/connect|disconnect]]`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use vessel_api::{ConnectRequest, DisconnectRequest, ErrorBody, Instance, Network, NetworkConfig};

use super::{ApiResult, AppState};

#[utoipa::path(get, path = "/1.0/networks", tag = "networks", responses((status = 200, body = [Network])))]
pub async fn list(State(st): State<AppState>) -> ApiResult<Json<Vec<Network>>> {
    Ok(Json(st.mgr.networks()?))
}

#[utoipa::path(post, path = "/1.0/networks", tag = "networks", request_body = NetworkConfig,
    responses((status = 201, body = Network), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    body: Result<Json<NetworkConfig>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Network>)> {
    let Json(cfg) = body?;
    Ok((StatusCode::CREATED, Json(st.mgr.create_network(cfg).await?)))
}

#[utoipa::path(get, path = "/1.0/networks/{name}", tag = "networks", params(("name" = String, Path)),
    responses((status = 200, body = Network), (status = 404, body = ErrorBody)))]
pub async fn inspect(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Network>> {
    Ok(Json(st.mgr.network(&name)?))
}

#[utoipa::path(delete, path = "/1.0/networks/{name}", tag = "networks", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "In use")))]
pub async fn delete(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    st.mgr.delete_network(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/1.0/networks/{name}/connect", tag = "networks", request_body = ConnectRequest,
    params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn connect(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<ConnectRequest>, JsonRejection>,
) -> ApiResult<Json<Instance>> {
    let Json(req) = body?;
    Ok(Json(st.mgr.connect(&name, req).await?))
}

#[utoipa::path(post, path = "/1.0/networks/{name}/disconnect", tag = "networks", request_body = DisconnectRequest,
    params(("name" = String, Path)),
    responses((status = 200, body = Instance), (status = 404, body = ErrorBody)))]
pub async fn disconnect(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<DisconnectRequest>, JsonRejection>,
) -> ApiResult<Json<Instance>> {
    let Json(req) = body?;
    Ok(Json(st.mgr.disconnect(&name, &req.instance).await?))
}
