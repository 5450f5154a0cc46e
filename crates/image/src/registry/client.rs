//! One registry, one image: the HTTP agent (TLS roots, insecure mode), the scheme, authentication (Basic or
//! bearer tokens per scope) and the mapping of failed answers to [`RegistryError`]s.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{self, Method, Response, StatusCode};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, Body, SendBody};

use super::auth::{self, Challenge};
use super::{RegistryError, RegistryOptions};

/// Cap on answers read whole into memory (manifests, error bodies, tokens).
pub(crate) const MAX_SMALL_BODY: u64 = 8 << 20;

/// What a request sends.
pub(crate) enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`; reopened for every attempt.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

/// One request. `what` names it in error messages ("GET manifest latest").
pub(crate) struct Call<'a> {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Payload<'a>,
    pub what: String,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, url: String, what: impl Into<String>) -> Call<'a> {
        Call {
            method,
            url,
            headers: Vec::new(),
            body: Payload::None,
            what: what.into(),
        }
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn body(mut self, body: Payload<'a>) -> Self {
        self.body = body;
        self
    }
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by scope list (joined with spaces).
    tokens: HashMap<String, String>,
}

pub(crate) struct Client {
    agent: Agent,
    /// "https://host:port" (no trailing slash).
    base: String,
    pub registry: String,
    pub image: String,
    basic: Option<String>,
    state: Mutex<AuthState>,
}

impl Client {
    /// Builds the agent and pings `/v2/` to pick the scheme and learn how the registry authenticates.
    pub fn connect(registry: &str, image: &str, opts: &RegistryOptions) -> Result<Client, RegistryError> {
        let tls = tls_config(image, opts)?;
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(5)
            .user_agent(concat!("vessel/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .tls_config(tls)
            .build()
            .into();
        let host = api_host(registry);
        let basic = match (&opts.username, &opts.password) {
            (Some(user), password) => Some(auth::basic_header(user, password.as_deref().unwrap_or(""))),
            (None, _) => None,
        };
        let mut client = Client {
            agent,
            base: format!("https://{host}"),
            registry: registry.to_string(),
            image: image.to_string(),
            basic,
            state: Mutex::new(AuthState::default()),
        };
        let Err(secure) = client.ping() else {
            return Ok(client);
        };
        if !opts.insecure {
            return Err(match secure {
                RegistryError::Unreachable {
                    image,
                    registry,
                    reason,
                } if !reason.contains("refused") => {
                    let reason =
                        format!("{reason} (a registry that serves plain HTTP needs the insecure option)");
                    RegistryError::Unreachable {
                        image,
                        registry,
                        reason,
                    }
                }
                other => other,
            });
        }
        client.base = format!("http://{host}");
        match client.ping() {
            Ok(()) => Ok(client),
            Err(RegistryError::Unreachable { .. }) => Err(secure),
            Err(other) => Err(other),
        }
    }

    fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let response = self.raw(&Call::new(Method::GET, url, "GET /v2/"), None)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(http::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge);
            self.state.lock().unwrap_or_else(|p| p.into_inner()).challenge = challenge;
        }
        Ok(())
    }

    /// `base` + "/v2/" + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{}", self.base, path)
    }

    /// An upload `Location`, absolute or relative to the registry.
    pub fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{}", self.base, location)
        } else {
            format!("{}/{}", self.base, location)
        }
    }

    /// Sends `call` with the credentials for `scopes`; on a 401 learns the challenge, fetches a fresh token and
    /// tries once more. Returns the answer whatever its status (see [`Client::fail`]).
    pub fn send(&self, call: &Call, scopes: &[String]) -> Result<Response<Body>, RegistryError> {
        self.send_with(call, scopes, &mut |_| {})
    }

    /// [`Client::send`], reporting the bytes of the request body as they are sent.
    pub fn send_with(
        &self,
        call: &Call,
        scopes: &[String],
        sent: &mut dyn FnMut(u64),
    ) -> Result<Response<Body>, RegistryError> {
        let mut authorization = self.authorization(scopes, false)?;
        let response = self.raw_with(call, authorization.as_deref(), sent)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_challenge);
        let Some(challenge) = challenge else {
            return Ok(response);
        };
        if challenge == Challenge::Basic && (authorization.is_some() || self.basic.is_none()) {
            // Credentials refused, or none to offer: the 401 is the answer.
            return Ok(response);
        }
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.challenge = Some(challenge);
            state.tokens.remove(&scopes.join(" "));
        }
        authorization = self.authorization(scopes, true)?;
        if authorization.is_none() {
            return Ok(response);
        }
        self.raw_with(call, authorization.as_deref(), sent)
    }

    /// The `Authorization` value for `scopes`: Basic, a cached bearer token, or a new one.
    fn authorization(&self, scopes: &[String], refresh: bool) -> Result<Option<String>, RegistryError> {
        let key = scopes.join(" ");
        let challenge = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match &state.challenge {
                None => return Ok(None),
                Some(Challenge::Basic) => return Ok(self.basic.clone()),
                Some(c) => {
                    if let (false, Some(token)) = (refresh, state.tokens.get(&key)) {
                        return Ok(Some(format!("Bearer {token}")));
                    }
                    c.clone()
                }
            }
        };
        let Challenge::Bearer { realm, service } = challenge else {
            return Ok(None);
        };
        let url = auth::token_url(&realm, service.as_deref(), scopes);
        let mut call = Call::new(Method::GET, url, "GET token");
        if let Some(basic) = &self.basic {
            call = call.header("authorization", basic.clone());
        }
        let mut response = self.raw(&call, None)?;
        let status = response.status();
        let body = read_small(&mut response).unwrap_or_default();
        if !status.is_success() {
            let detail = error_detail(&body).unwrap_or_else(|| status.to_string());
            return Err(RegistryError::Unauthorized {
                image: self.image.clone(),
                registry: self.registry.clone(),
                reason: format!("the token endpoint {realm} answered {status}: {detail}"),
            });
        }
        let token = auth::token_from_json(&body).map_err(|reason| RegistryError::Unauthorized {
            image: self.image.clone(),
            registry: self.registry.clone(),
            reason,
        })?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.tokens.insert(key, token.clone());
        Ok(Some(format!("Bearer {token}")))
    }

    fn raw(&self, call: &Call, authorization: Option<&str>) -> Result<Response<Body>, RegistryError> {
        self.raw_with(call, authorization, &mut |_| {})
    }

    fn raw_with(
        &self,
        call: &Call,
        authorization: Option<&str>,
        sent: &mut dyn FnMut(u64),
    ) -> Result<Response<Body>, RegistryError> {
        let mut builder = http::Request::builder()
            .method(call.method.clone())
            .uri(&call.url);
        for (name, value) in &call.headers {
            builder = builder.header(*name, value);
        }
        if let Some(value) = authorization {
            builder = builder.header("authorization", value);
        }
        let result = match &call.body {
            Payload::None => {
                let body = if matches!(call.method, Method::GET | Method::HEAD) {
                    None
                } else {
                    Some(0)
                };
                if let Some(len) = body {
                    builder = builder.header("content-length", len);
                }
                builder.body(()).map(|r| self.agent.run(r))
            }
            Payload::Bytes(bytes) => {
                builder = builder.header("content-length", bytes.len());
                let result = builder.body(*bytes).map(|r| self.agent.run(r));
                sent(bytes.len() as u64);
                result
            }
            Payload::File { path, offset, len } => {
                let mut file = std::fs::File::open(path).map_err(|e| RegistryError::LocalDamaged {
                    image: self.image.clone(),
                    reason: format!("cannot open {}: {e}", path.display()),
                })?;
                file.seek(SeekFrom::Start(*offset))
                    .map_err(|e| RegistryError::LocalDamaged {
                        image: self.image.clone(),
                        reason: format!("cannot read {}: {e}", path.display()),
                    })?;
                let mut reader = Counting {
                    inner: file.take(*len),
                    sent,
                };
                builder = builder.header("content-length", *len);
                builder
                    .body(SendBody::from_reader(&mut reader))
                    .map(|r| self.agent.run(r))
            }
        };
        let result = result.map_err(|e| self.bad(&call.what, format!("cannot build the request: {e}")))?;
        result.map_err(|e| self.transport(&call.what, e))
    }

    /// Maps a transport failure (no HTTP answer) to an error.
    pub fn transport(&self, what: &str, error: ureq::Error) -> RegistryError {
        let reason = describe(&error);
        match error {
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::Pem(_)
            | ureq::Error::Protocol(_) => RegistryError::Unreachable {
                image: self.image.clone(),
                registry: self.registry.clone(),
                reason: format!("{what}: {reason}"),
            },
            _ => self.bad(what, reason),
        }
    }

    pub fn bad(&self, what: &str, reason: impl Into<String>) -> RegistryError {
        RegistryError::BadResponse {
            image: self.image.clone(),
            registry: self.registry.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    /// Maps an unexpected answer to an error, using the distribution spec's error codes where the body has
    /// them. `repository` and `target` (tag or digest) name what was asked for.
    pub fn fail(
        &self,
        what: &str,
        mut response: Response<Body>,
        repository: &str,
        target: &str,
    ) -> RegistryError {
        let status = response.status();
        let body = read_small(&mut response).unwrap_or_default();
        let codes = error_codes(&body);
        let detail =
            error_detail(&body).unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        let has = |code: &str| codes.iter().any(|c| c == code);
        let (image, registry) = (self.image.clone(), self.registry.clone());
        if has("NAME_UNKNOWN") {
            RegistryError::NameUnknown {
                image,
                registry,
                repository: repository.to_string(),
            }
        } else if has("MANIFEST_UNKNOWN") || (status == StatusCode::NOT_FOUND && what.contains("manifest")) {
            RegistryError::ManifestUnknown {
                image,
                registry,
                repository: repository.to_string(),
                target: target.to_string(),
            }
        } else if has("NAME_INVALID") {
            RegistryError::NameInvalid {
                image,
                registry,
                reason: detail,
            }
        } else if status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || has("UNAUTHORIZED")
            || has("DENIED")
        {
            let reason = if self.basic.is_none() {
                format!("{detail} (no credentials given)")
            } else {
                detail
            };
            RegistryError::Unauthorized {
                image,
                registry,
                reason,
            }
        } else {
            RegistryError::Status {
                image,
                registry,
                what: what.to_string(),
                status: status.as_u16(),
                detail,
            }
        }
    }
}

/// Docker Hub's API lives on registry-1.docker.io.
fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry.hub.docker.com" => "registry-1.docker.io",
        other => other,
    }
}

fn tls_config(image: &str, opts: &RegistryOptions) -> Result<TlsConfig, RegistryError> {
    let mut tls = TlsConfig::builder();
    if let Some(path) = &opts.ca_file {
        let fail = |reason: String| RegistryError::CaFile {
            image: image.to_string(),
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let mut certs: Vec<Certificate<'static>> = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let PemItem::Certificate(cert) = item.map_err(|e| fail(e.to_string()))? {
                certs.push(cert);
            }
        }
        if certs.is_empty() {
            return Err(fail("no PEM certificate in it".to_string()));
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    if opts.insecure {
        tls = tls.disable_verification(true);
    }
    Ok(tls.build())
}

/// Reads a whole small answer (at most [`MAX_SMALL_BODY`]).
pub(crate) fn read_small(response: &mut Response<Body>) -> Result<Vec<u8>, ureq::Error> {
    response
        .body_mut()
        .with_config()
        .limit(MAX_SMALL_BODY)
        .read_to_vec()
}

/// The `code`s of a distribution-spec error body `{"errors":[{"code":..,"message":..}]}`.
fn error_codes(body: &[u8]) -> Vec<String> {
    errors(body).into_iter().map(|(code, _)| code).collect()
}

/// A one-line description of an error body: the spec's messages, or the start of the text.
fn error_detail(body: &[u8]) -> Option<String> {
    let errors = errors(body);
    if !errors.is_empty() {
        return Some(
            errors
                .into_iter()
                .map(|(c, m)| format!("{m} ({c})"))
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!line.is_empty()).then(|| line.chars().take(200).collect())
}

fn errors(body: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<Errors>(body)
        .map(|e| e.errors.into_iter().map(|e| (e.code, e.message)).collect())
        .unwrap_or_default()
}

/// A short reason for a transport error, without ureq's prefixes where a cause is more telling.
pub(crate) fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => e.to_string(),
        },
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        other => other.to_string(),
    }
}

/// A reader that reports how many bytes went through it.
struct Counting<'s, R> {
    inner: R,
    sent: &'s mut dyn FnMut(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.sent)(n as u64);
        Ok(n)
    }
}

/// A header's value as text.
pub(crate) fn header<'r>(response: &'r Response<Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(error_codes(body), vec!["MANIFEST_UNKNOWN"]);
        assert_eq!(error_detail(body).unwrap(), "manifest unknown (MANIFEST_UNKNOWN)");
        assert_eq!(
            error_detail(b"<html>\n  <b>Bad</b> gateway</html>").unwrap(),
            "<html> <b>Bad</b> gateway</html>"
        );
        assert_eq!(error_detail(b""), None);
    }

    #[test]
    fn docker_hub_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
