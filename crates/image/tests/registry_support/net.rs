//! Loopback helpers: an HTTP proxy in front of the registry that records requests and injects faults (cut
//! connections, corrupted bytes, garbage manifests), and a token server for the registry's token auth.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    None,
    /// The first `times` layer downloads (blob GETs of more than 4 KiB) stop after `after` bytes of body.
    Cut {
        after: usize,
        times: usize,
    },
    /// Every layer download has one byte flipped in the middle.
    Corrupt,
    /// Manifests come back as an HTML page.
    HtmlManifest,
    /// Manifests come back with the right content type but broken JSON.
    BadJsonManifest,
}

/// A one-request-per-connection HTTP proxy to `upstream` (plain HTTP).
pub struct FaultProxy {
    pub addr: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: &str, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (upstream, log, stop2) = (upstream.to_string(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (upstream, log, cuts) = (upstream.clone(), log.clone(), cuts.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, fault, &log, &cuts);
                });
            }
        });
        FaultProxy { addr, requests, stop }
    }

    /// "METHOD /path range=bytes=N-" per request so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Reads an HTTP head (up to the blank line); None at EOF.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Head lines without `Connection`, plus `Connection: close`, as bytes.
fn closing_head(lines: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0
            && l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out += l;
        out += "\r\n";
    }
    out += "Connection: close\r\n\r\n";
    out.into_bytes()
}

fn serve(
    client: TcpStream,
    upstream: &str,
    fault: Fault,
    log: &Mutex<Vec<String>>,
    cuts: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut parts = head[0].split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    log.lock().unwrap().push(format!(
        "{method} {path} range={}",
        header(&head, "range").unwrap_or("-")
    ));

    let is_manifest_get = method == "GET" && path.contains("/manifests/");
    let garbage = match fault {
        Fault::HtmlManifest if is_manifest_get => {
            Some(("text/html", &b"<html><body>Welcome to nginx</body></html>"[..]))
        }
        Fault::BadJsonManifest if is_manifest_get => Some((
            "application/vnd.oci.image.manifest.v1+json",
            &b"{\"schemaVersion\": 2, \"config\": {"[..],
        )),
        _ => None,
    };
    if let Some((content_type, text)) = garbage {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            text.len()
        );
        client.write_all(head.as_bytes())?;
        client.write_all(text)?;
        return client.shutdown(Shutdown::Both);
    }

    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&closing_head(&head))?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    let (head_bytes, body) = answer.split_at(split);
    let head_lines: Vec<String> = String::from_utf8_lossy(head_bytes)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let mut body = body.to_vec();
    let is_layer_get = method == "GET" && path.contains("/blobs/sha256:") && body.len() > 4096;
    client.write_all(&closing_head(&head_lines))?;
    match fault {
        Fault::Cut { after, times } if is_layer_get && cuts.fetch_add(1, Ordering::SeqCst) < times => {
            client.write_all(&body[..after.min(body.len())])?;
        }
        Fault::Corrupt if is_layer_get => {
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
            client.write_all(&body)?;
        }
        _ => client.write_all(&body)?,
    }
    client.flush()?;
    client.shutdown(Shutdown::Both)
}

/// A token endpoint for the registry's `auth: token:` (distribution's JWT tokens, RS256 signed with `key`,
/// the certificate in the `x5c` header). Grants whatever is asked to `user`:`password`.
pub struct TokenServer {
    pub addr: String,
    issued: Arc<Mutex<Vec<String>>>,
}

pub const SERVICE: &str = "vessel-test-registry";
pub const ISSUER: &str = "vessel-test-issuer";

impl TokenServer {
    pub fn start(cert: &Path, key: &Path, user: &str, password: &str) -> TokenServer {
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(cert)
            .output()
            .unwrap();
        assert!(
            der.status.success(),
            "openssl x509 failed: {}",
            String::from_utf8_lossy(&der.stderr)
        );
        let der = der.stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = Arc::new(Mutex::new(Vec::new()));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (log, key, user) = (issued.clone(), key.to_path_buf(), user.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = token_answer(conn, &basic, &user, &x5c, &key, &log);
            }
        });
        TokenServer { addr, issued }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The scopes of every token handed out so far.
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn token_answer(
    conn: TcpStream,
    basic: &str,
    user: &str,
    x5c: &str,
    key: &Path,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let target = head[0].split_whitespace().nth(1).unwrap_or("").to_string();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(unescape)
        .collect();
    if header(&head, "authorization") != Some(basic) {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        let answer = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes())?;
        return conn.shutdown(Shutdown::Both);
    }
    log.lock().unwrap().push(scopes.join(" "));
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let jwt_head = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 600, "nbf": now - 60, "iat": now - 60,
        "jti": format!("{now}-{}", log.lock().unwrap().len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&jwt_head).unwrap()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(signing_input.as_bytes())?;
    let signature = child.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", b64(&signature));
    let body = serde_json::json!({"token": token, "expires_in": 600}).to_string();
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(answer.as_bytes())?;
    conn.shutdown(Shutdown::Both)
}
