//! `GET /metrics` in Prometheus' text format: per instance CPU, memory, pids, block I/O and restarts; the
//! daemon's requests by route and status, and their latencies.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// A request's method, route and status.
type RequestKey = (String, String, u16);

#[derive(Default)]
pub struct Metrics {
    /// Count and total seconds per method, route and status.
    requests: Mutex<BTreeMap<RequestKey, (u64, f64)>>,
}

/// One per-instance series: name, help, type, and its value in a sample.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&vessel_api::Stats) -> f64,
);

pub async fn count(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    let secs = start.elapsed().as_secs_f64();
    let mut m = st.metrics.requests.lock().unwrap_or_else(|p| p.into_inner());
    let e = m.entry((method, route, resp.status().as_u16())).or_default();
    e.0 += 1;
    e.1 += secs;
    resp
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[utoipa::path(get, path = "/metrics", tag = "daemon",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn render(State(st): State<AppState>) -> Response {
    let mgr = st.mgr.clone();
    let instances = tokio::task::spawn_blocking(move || {
        let list = mgr.list().unwrap_or_default();
        list.into_iter()
            .map(|i| {
                let sample = if i.state.status.is_active() {
                    mgr.sample(&i.id).ok().map(|s| s.stats)
                } else {
                    None
                };
                (i, sample)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    gauge(
        &mut out,
        "vessel_instance_up",
        "1 when the instance runs (or is paused).",
        "gauge",
    );
    for (i, _) in &instances {
        let _ = writeln!(
            out,
            "vessel_instance_up{{id=\"{}\",name=\"{}\",status=\"{}\"}} {}",
            i.id,
            label(&i.name),
            i.state.status,
            u8::from(i.state.status.is_active())
        );
    }
    gauge(
        &mut out,
        "vessel_instance_restarts_total",
        "Restarts made by the restart policy.",
        "counter",
    );
    for (i, _) in &instances {
        let _ = writeln!(
            out,
            "vessel_instance_restarts_total{{id=\"{}\",name=\"{}\"}} {}",
            i.id,
            label(&i.name),
            i.state.restart_count
        );
    }
    let series: [Series; 6] = [
        (
            "vessel_instance_cpu_seconds_total",
            "CPU time used.",
            "counter",
            |s| s.cpu_usage_ns as f64 / 1e9,
        ),
        ("vessel_instance_memory_bytes", "Memory in use.", "gauge", |s| {
            s.memory_usage as f64
        }),
        (
            "vessel_instance_memory_limit_bytes",
            "Memory limit.",
            "gauge",
            |s| s.memory_limit as f64,
        ),
        ("vessel_instance_pids", "Processes and threads.", "gauge", |s| {
            s.pids as f64
        }),
        (
            "vessel_instance_block_read_bytes_total",
            "Bytes read from block devices.",
            "counter",
            |s| s.block_read as f64,
        ),
        (
            "vessel_instance_block_write_bytes_total",
            "Bytes written to block devices.",
            "counter",
            |s| s.block_write as f64,
        ),
    ];
    for (name, help, kind, value) in series {
        gauge(&mut out, name, help, kind);
        for (i, s) in &instances {
            if let Some(s) = s {
                let _ = writeln!(
                    out,
                    "{name}{{id=\"{}\",name=\"{}\"}} {}",
                    i.id,
                    label(&i.name),
                    value(s)
                );
            }
        }
    }
    gauge(
        &mut out,
        "vesseld_requests_total",
        "API requests by route and status.",
        "counter",
    );
    let reqs = st
        .metrics
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for ((m, r, s), (n, _)) in &reqs {
        let _ = writeln!(
            out,
            "vesseld_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {n}",
            label(r)
        );
    }
    gauge(
        &mut out,
        "vesseld_request_duration_seconds_sum",
        "Time spent answering, by route.",
        "counter",
    );
    for ((m, r, s), (_, t)) in &reqs {
        let _ = writeln!(
            out,
            "vesseld_request_duration_seconds_sum{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {t}",
            label(r)
        );
    }
    let mut resp = out.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
