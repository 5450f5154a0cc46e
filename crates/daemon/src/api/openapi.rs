//! The API's OpenAPI document, generated from the handlers' own annotations and the request and response
//! types of `vessel-api`, served at `GET /1.0/openapi.json`. A test calls every operation it lists and
//! sends every request body with an unknown field (which must be refused).

use axum::Json;
use utoipa::OpenApi;
use vessel_api::{
    Attachment, ConnectRequest, DeviceRate, DisconnectRequest, ErrorBody, Event, ExecConfig, Image,
    ImageDetail, Info, Instance, InstanceConfig, InstanceState, InstanceUpdate, Kind, Limits, LogRecord,
    Network, NetworkConfig, NetworkRequest, Operation, OperationProgress, OperationStatus, PortMapping,
    PruneResult, PullRequest, PushRequest, RegistryAuth, Rename, RestartPolicy, StateChange, Stats, Status,
    TagRequest, Top, Ulimit, VmSpec, WaitResult,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vesseld",
        description = "vessel's daemon: instances of kind container (and, later, vm)"
    ),
    paths(
        super::instances::info,
        super::instances::list,
        super::instances::create,
        super::instances::inspect,
        super::instances::delete,
        super::instances::update,
        super::instances::change_state,
        super::instances::rename,
        super::instances::wait,
        super::instances::top,
        super::streams::attach,
        super::streams::exec,
        super::streams::logs,
        super::streams::stats,
        super::streams::events,
        super::metrics::render,
        super::images::list,
        super::images::inspect,
        super::images::remove,
        super::images::tag,
        super::images::prune,
        super::images::pull,
        super::images::push,
        super::networks::list,
        super::networks::create,
        super::networks::inspect,
        super::networks::delete,
        super::networks::connect,
        super::networks::disconnect,
        super::operations::list,
        super::operations::show,
        super::operations::wait,
        super::operations::cancel,
        document,
    ),
    components(schemas(
        ErrorBody,
        Event,
        ExecConfig,
        Info,
        Instance,
        InstanceConfig,
        InstanceState,
        InstanceUpdate,
        Kind,
        Limits,
        LogRecord,
        Rename,
        RestartPolicy,
        StateChange,
        Stats,
        Status,
        Top,
        Ulimit,
        VmSpec,
        WaitResult,
        Image,
        ImageDetail,
        Operation,
        OperationProgress,
        OperationStatus,
        PruneResult,
        PullRequest,
        PushRequest,
        RegistryAuth,
        TagRequest,
        DeviceRate,
        Network,
        NetworkConfig,
        NetworkRequest,
        ConnectRequest,
        DisconnectRequest,
        Attachment,
        PortMapping
    ))
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/1.0/openapi.json", tag = "daemon",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
