//! The API on TCP: always TLS (rustls), always authenticated. A client proves itself with a certificate
//! signed by the configured client CA, or with a bearer token from the tokens file (one per line). Plain TCP,
//! or TCP without any way to authenticate, is refused at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::api::{ApiError, AppState};

#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Bearer tokens, one per line.
    pub tokens: Option<PathBuf>,
    /// Client certificates signed by this CA are authenticated.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0} holds no certificate")]
    NoCert(String),
    #[error("TLS set-up failed: {0}")]
    Config(String),
    #[error("--listen-tcp needs a way to authenticate clients: --tokens-file or --tls-client-ca")]
    NoAuth,
    #[error("{0} holds no token")]
    NoTokens(String),
}

fn read_err(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Who is asking, as the TCP listener learnt it (absent on the unix socket, whose file mode is its guard).
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    /// The client presented a certificate the client CA signed (rustls verified it in the handshake).
    pub client_cert: bool,
}

/// The accepted bearer tokens.
#[derive(Debug, Default)]
pub struct Tokens(Vec<String>);

impl Tokens {
    pub fn load(path: Option<&Path>) -> Result<Tokens, TlsError> {
        let Some(path) = path else {
            return Ok(Tokens::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let tokens: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        if tokens.is_empty() {
            return Err(TlsError::NoTokens(path.display().to_string()));
        }
        Ok(Tokens(tokens))
    }

    /// Compared in constant time, so the answer's timing tells nothing about a token's prefix.
    fn accepts(&self, given: &str) -> bool {
        self.0.iter().fold(false, |ok, t| {
            let same_len = t.len() == given.len();
            let diff = t
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            ok | (same_len && diff == 0)
        })
    }
}

pub fn acceptor(cfg: &TcpConfig) -> Result<TlsAcceptor, TlsError> {
    if cfg.tokens.is_none() && cfg.client_ca.is_none() {
        return Err(TlsError::NoAuth);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(read_err(&cfg.cert))?
        .collect::<Result<_, _>>()
        .map_err(read_err(&cfg.cert))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cfg.cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(read_err(&cfg.key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(read_err(ca))? {
                roots
                    .add(c.map_err(read_err(ca))?)
                    .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            // Without a certificate a client may still come in with a token.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Requests over TCP must be authenticated: 401 without credentials, 403 with a token that is not ours.
pub async fn authenticate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(remote) = req.extensions().get::<Remote>().copied() else {
        return next.run(req).await;
    };
    if remote.client_cert {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Authentication required: a client certificate or 'Authorization: Bearer TOKEN'",
        )
        .into_response(),
        Some(t) if st.tokens.accepts(t.trim()) => next.run(req).await,
        Some(_) => ApiError::new(StatusCode::FORBIDDEN, "The token is not accepted").into_response(),
    }
}

/// Accept TLS connections on `listener` and serve `router` on each, marking requests as remote.
pub async fn serve(listener: tokio::net::TcpListener, acceptor: TlsAcceptor, router: axum::Router) {
    use tower::ServiceExt;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            // A failed handshake (no TLS, an untrusted certificate) ends the connection: nothing was asked.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let remote = Remote {
                client_cert: tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()),
            };
            let svc = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(remote);
                req
            });
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .with_upgrades()
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let t = Tokens(vec!["s3cret".into(), "other".into()]);
        assert!(t.accepts("s3cret") && t.accepts("other"));
        assert!(!t.accepts("s3cre") && !t.accepts("s3cret!") && !t.accepts(""));
        assert!(!Tokens::default().accepts(""));
    }
}
