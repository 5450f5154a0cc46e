//! vesseld's API from the command line: HTTP/1.1 over its unix socket, one connection per request, on a
//! single-threaded tokio runtime.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;
use vessel_api::ErrorBody;

/// The protocol of attach and exec connections (vesseld's `STREAM_PROTOCOL`).
const STREAM_PROTOCOL: &str = "vessel-stream";

pub struct Client {
    socket: PathBuf,
    /// Always set; an Option only so that drop can shut it down without waiting.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Client {
    fn drop(&mut self) {
        // A session's stdin reader may still block in read(2) on our terminal: do not wait for it.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A failed request: the daemon's one-line message, and its status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl Client {
    pub fn new(host: &str) -> Result<Client> {
        let socket = match host.strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None if host.starts_with('/') => PathBuf::from(host),
            None => {
                return Err(anyhow!(
                    "Unsupported host {host:?}: this vessel talks to vesseld on a unix socket (unix:///PATH)"
                ))
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("Cannot start the async runtime")?;
        Ok(Client { socket, rt: Some(rt) })
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime lives as long as the client"),
        }
    }

    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "Cannot reach vesseld at {}: {e} (is it running? start it with `vessel daemon`)",
                self.socket.display()
            )
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with vesseld")?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    fn build(method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "vesseld");
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        Ok(req.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
    }

    /// A request whose answer is one document.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        self.block_on(self.call_async(method, path, body))
    }

    pub async fn call_async<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let mut sender = self.connect().await?;
        let resp = sender.send_request(Self::build(method, path, body)?).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        check(status, &bytes)?;
        if bytes.is_empty() {
            return Ok(serde_json::from_str("null")?);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("Unreadable answer from vesseld to {path}"))
    }

    /// A request whose answer is JSON lines: `each` gets every line until it returns false or the stream ends.
    pub fn lines(&self, path: &str, mut each: impl FnMut(&[u8]) -> Result<bool>) -> Result<()> {
        self.block_on(async {
            let mut sender = self.connect().await?;
            let resp = sender.send_request(Self::build(Method::GET, path, None)?).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            if !status.is_success() {
                let bytes = body.collect().await?.to_bytes();
                check(status, &bytes)?;
                return Ok(());
            }
            let mut buf: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        if !each(&line[..line.len() - 1])? {
                            return Ok(());
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Upgrade a request to a `vessel-stream` connection (attach, exec).
    pub async fn upgrade(
        &self,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
        let mut sender = self.connect().await?;
        let mut req = Self::build(Method::POST, path, body)?;
        req.headers_mut().insert("Connection", "Upgrade".parse()?);
        req.headers_mut().insert("Upgrade", STREAM_PROTOCOL.parse()?);
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let bytes = resp.into_body().collect().await?.to_bytes();
            check(status, &bytes)?;
            return Err(anyhow!("vesseld did not switch protocols ({status})"));
        }
        Ok(TokioIo::new(hyper::upgrade::on(resp).await?))
    }
}

fn check(status: StatusCode, bytes: &[u8]) -> Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let message = serde_json::from_slice::<ErrorBody>(bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("vesseld answered {status}"));
    Err(ApiError { status, message }.into())
}

/// Percent-encoding for a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
