//! The streaming handlers: attach and exec (an HTTP upgrade to `vessel-stream`, then frames both ways),
//! logs, stats and events (JSON lines, one per record, sent as they come).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio_stream_lite::ReceiverStream;
use vessel_api::frames::{self, FrameKind};
use vessel_api::{ErrorBody, Event, ExecConfig, LogRecord, Stats};

use super::{ApiError, ApiResult, AppState};
use crate::manager::LogQuery;

/// The protocol name of an upgraded attach or exec connection.
pub const STREAM_PROTOCOL: &str = "vessel-stream";

fn wants_upgrade(req: &Request) -> ApiResult<()> {
    let ok = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(STREAM_PROTOCOL));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "This endpoint needs 'Connection: Upgrade' and 'Upgrade: {STREAM_PROTOCOL}'"
        )))
    }
}

fn switching() -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(STREAM_PROTOCOL));
    resp
}

/// `POST /1.0/instances/NAME/attach`: the instance's output (and input) from now on, or from its next
/// start when it is not running; ends with an exit frame.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachQuery {
    /// The client's terminal size, set on the instance's terminal before its process starts.
    #[serde(default)]
    rows: Option<u16>,
    #[serde(default)]
    cols: Option<u16>,
}

#[utoipa::path(post, path = "/1.0/instances/{name}/attach", tag = "streams",
    description = "Upgrade to `vessel-stream` (frames: stdin, stdout, stderr, exit, resize, stdin-eof, error)",
    params(("name" = String, Path), ("rows" = Option<u16>, Query), ("cols" = Option<u16>, Query)),
    responses((status = 101, description = "Switching to vessel-stream"), (status = 400, body = ErrorBody)))]
pub async fn attach(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<AttachQuery>, axum::extract::rejection::QueryRejection>,
    mut req: Request,
) -> ApiResult<Response> {
    wants_upgrade(&req)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let size = q.rows.zip(q.cols).filter(|(r, c)| *r > 0 && *c > 0);
    let target = st.mgr.attach(&name, size)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut client = TokioIo::new(upgraded);
        match target.await {
            Ok(Ok(mut supervisor)) => {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut supervisor).await;
            }
            Ok(Err(msg)) => {
                let _ = client
                    .write_all(&frames::encode(FrameKind::Error, msg.as_bytes()))
                    .await;
            }
            Err(_) => {
                let _ = client
                    .write_all(&frames::encode(FrameKind::Error, b"The instance was deleted"))
                    .await;
            }
        }
        let _ = client.shutdown().await;
    });
    Ok(switching())
}

/// `POST /1.0/instances/NAME/exec` with an [`ExecConfig`] body: the process's streams, then its exit frame.
#[utoipa::path(post, path = "/1.0/instances/{name}/exec", tag = "streams", request_body = ExecConfig,
    description = "Upgrade to `vessel-stream` carrying the process's streams and exit code",
    params(("name" = String, Path)),
    responses((status = 101, description = "Switching to vessel-stream"), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn exec(
    State(st): State<AppState>,
    Path(name): Path<String>,
    mut req: Request,
) -> ApiResult<Response> {
    // The body is checked first, so a bad one is named even when the upgrade is missing too.
    let upgrade = wants_upgrade(&req);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("Cannot read the request body: {e}")))?;
    let config: ExecConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))?;
    upgrade?;
    let mut session = st.mgr.exec(&name, config).await?;
    tokio::spawn(async move {
        let (Some(stdin), Some(stdout)) = (session.child.stdin.take(), session.child.stdout.take()) else {
            return;
        };
        let mut helper = tokio::io::join(stdout, stdin);
        if let Ok(upgraded) = on_upgrade.await {
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut helper).await;
            let _ = client.shutdown().await;
        }
        drop(helper);
        let _ = session.child.wait().await;
    });
    Ok(switching())
}

fn json_lines(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Response {
    let stream = ReceiverStream::new(rx, |b: Vec<u8>| Ok::<_, Infallible>(Bytes::from(b)));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(default)]
    follow: Option<bool>,
    /// A number of records, or "all".
    #[serde(default)]
    tail: Option<String>,
    /// RFC 3339 time, or a duration back from now ("10m", "30s", "2h").
    #[serde(default)]
    since: Option<String>,
}

/// `since` as docker takes it: an RFC 3339 time, seconds since the epoch, or a duration ago.
pub(super) fn parse_since(s: &str) -> ApiResult<Duration> {
    if let Some(t) = vessel_api::time::parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(secs) = s.parse::<f64>() {
        // Found by the fuzz target: a huge or infinite number of seconds panicked in from_secs_f64.
        return Duration::try_from_secs_f64(secs.max(0.0)).map_err(|_| {
            ApiError::bad_request(format!("Invalid since {s:?}: not a time this clock can hold"))
        });
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid since {s:?}: use a time (RFC 3339) or a duration like 10m"
        ))
    })?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => {
            return Err(ApiError::bad_request(format!(
                "Invalid since {s:?}: the unit must be s, m or h"
            )))
        }
    }
    .unwrap_or(u64::MAX);
    Ok(now.saturating_sub(Duration::from_secs(secs)))
}

#[utoipa::path(get, path = "/1.0/instances/{name}/logs", tag = "streams",
    params(("name" = String, Path), ("follow" = Option<bool>, Query), ("tail" = Option<String>, Query),
           ("since" = Option<String>, Query, description = "RFC 3339, seconds since the epoch, or 10s/5m/2h ago")),
    responses((status = 200, description = "JSON lines", body = LogRecord, content_type = "application/x-ndjson"),
              (status = 400, body = ErrorBody)))]
pub async fn logs(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let tail = match q.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("Invalid tail {n:?}: use a number or all")))?,
        ),
    };
    let since = q.since.as_deref().map(parse_since).transpose()?;
    let rx = st.mgr.logs(
        &name,
        LogQuery {
            tail,
            since,
            follow: q.follow.unwrap_or(false),
        },
    )?;
    Ok(json_lines(rx))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// A sample per second until the client goes (default: one sample).
    #[serde(default)]
    stream: Option<bool>,
}

#[utoipa::path(get, path = "/1.0/instances/{name}/stats", tag = "streams",
    params(("name" = String, Path), ("stream" = Option<bool>, Query, description = "A sample per second")),
    responses((status = 200, body = Stats), (status = 409, body = ErrorBody)))]
pub async fn stats(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mgr = st.mgr.clone();
    let n2 = name.clone();
    let first = tokio::task::spawn_blocking(move || mgr.stats(&n2, None))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    if !q.stream.unwrap_or(false) {
        let mut resp = Response::new(Body::from(serde_json::to_vec(&first.stats).unwrap_or_default()));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(resp);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mgr = st.mgr.clone();
    tokio::spawn(async move {
        let mut prev = first;
        loop {
            let mut line = serde_json::to_vec(&prev.stats).unwrap_or_default();
            line.push(b'\n');
            if tx.send(line).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (m, n, p) = (mgr.clone(), name.clone(), prev.clone());
            match tokio::task::spawn_blocking(move || m.stats(&n, Some(&p))).await {
                Ok(Ok(s)) => prev = s,
                _ => return,
            }
        }
    });
    Ok(json_lines(rx))
}

/// `GET /1.0/events`: lifecycle events as JSON lines, from now on.
#[utoipa::path(get, path = "/1.0/events", tag = "streams",
    responses((status = 200, description = "JSON lines", body = Event, content_type = "application/x-ndjson")))]
pub async fn events(State(st): State<AppState>) -> Response {
    let mut sub = st.mgr.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            match sub.recv().await {
                Ok(ev) => {
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    json_lines(rx)
}

/// A `Stream` over an mpsc receiver, without pulling in tokio-stream for one adapter.
mod tokio_stream_lite {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct ReceiverStream<T, F> {
        rx: tokio::sync::mpsc::Receiver<T>,
        map: F,
    }

    impl<T, F> ReceiverStream<T, F> {
        pub fn new(rx: tokio::sync::mpsc::Receiver<T>, map: F) -> Self {
            ReceiverStream { rx, map }
        }
    }

    impl<T, U, F: FnMut(T) -> U + Unpin> futures_core::Stream for ReceiverStream<T, F> {
        type Item = U;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<U>> {
            let this = &mut *self;
            this.rx.poll_recv(cx).map(|o| o.map(&mut this.map))
        }
    }
}
