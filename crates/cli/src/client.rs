//! vesseld's API from the command line: HTTP/1.1 over its unix socket, or over TLS to its TCP listener
//! (with a bearer token or a client certificate), one connection per request, on a single-threaded tokio
//! runtime.

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

/// How to reach a remote vesseld (`--host tcp://HOST:PORT`).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The CA that signed vesseld's certificate.
    pub ca: Option<PathBuf>,
    /// A client certificate and key, when vesseld accepts those.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub token: Option<String>,
}

enum Target {
    Unix(PathBuf),
    Tcp {
        addr: String,
        name: rustls::pki_types::ServerName<'static>,
        connector: tokio_rustls::TlsConnector,
        token: Option<String>,
    },
}

pub struct Client {
    target: Target,
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
    pub fn new(host: &str, tls: &TlsOptions) -> Result<Client> {
        let target = if let Some(p) = host.strip_prefix("unix://") {
            Target::Unix(PathBuf::from(p))
        } else if host.starts_with('/') {
            Target::Unix(PathBuf::from(host))
        } else if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("https://"))
        {
            tcp_target(addr, tls)?
        } else {
            return Err(anyhow!(
                "Unsupported host {host:?}: use unix:///PATH or tcp://HOST:PORT (TLS)"
            ));
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("Cannot start the async runtime")?;
        Ok(Client { target, rt: Some(rt) })
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime lives as long as the client"),
        }
    }

    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        match &self.target {
            Target::Unix(socket) => {
                let stream = UnixStream::connect(socket).await.map_err(|e| {
                    anyhow!(
                        "Cannot reach vesseld at {}: {e} (is it running? start it with `vessel daemon`)",
                        socket.display()
                    )
                })?;
                handshake(stream).await
            }
            Target::Tcp {
                addr,
                name,
                connector,
                ..
            } => {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| anyhow!("Cannot reach vesseld at {addr}: {e}"))?;
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| anyhow!("TLS with vesseld at {addr} failed: {e}"))?;
                handshake(tls).await
            }
        }
    }

    fn build(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "vesseld");
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        if let Target::Tcp { token: Some(t), .. } = &self.target {
            req = req.header("Authorization", format!("Bearer {t}"));
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
        Ok(self.request(method, path, body).await?.1)
    }

    /// A request whose answer's status matters (201 made, 202 an operation): the status and the body.
    pub fn call_status(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(StatusCode, serde_json::Value)> {
        self.block_on(self.request(method, path, body))
    }

    /// One request with a JSON answer (an empty body reads as null): its status and its document.
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(StatusCode, T)> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(self.build(method, path, body)?)
            .await
            .context("The request to vesseld failed")?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        check(status, &bytes)?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        let doc = serde_json::from_slice(bytes)
            .with_context(|| format!("Unreadable answer from vesseld to {path}"))?;
        Ok((status, doc))
    }

    /// A request whose answer is JSON lines: `each` gets every line until it returns false or the stream ends.
    pub fn lines(&self, path: &str, mut each: impl FnMut(&[u8]) -> Result<bool>) -> Result<()> {
        self.block_on(async {
            let mut sender = self.connect().await?;
            let resp = sender.send_request(self.build(Method::GET, path, None)?).await?;
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
        let mut req = self.build(Method::POST, path, body)?;
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

async fn handshake<S>(io: S) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake with vesseld")?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

fn tcp_target(addr: &str, tls: &TlsOptions) -> Result<Target> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let ca = tls.ca.as_ref().ok_or_else(|| {
        anyhow!("A TCP host needs --tls-ca (or VESSEL_TLS_CA): the CA of vesseld's certificate")
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| anyhow!("Cannot read {}: {e}", ca.display()))? {
        roots
            .add(c.map_err(|e| anyhow!("Cannot read {}: {e}", ca.display()))?)
            .map_err(|e| anyhow!("{}: {e}", ca.display()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| anyhow!("Cannot read {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow!("Cannot read {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow!("Cannot read {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(anyhow!("--tls-cert and --tls-key go together")),
    };
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_string()).map_err(|e| anyhow!("Invalid host {host:?}: {e}"))?;
    Ok(Target::Tcp {
        addr: addr.to_string(),
        name,
        connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        token: tls.token.clone(),
    })
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
/// A request without a body.
pub const NO_BODY: Option<&()> = None;

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
