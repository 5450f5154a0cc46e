//! Test support for the registry client: a real `docker-registry` (Debian's package, distribution 2.8) on a
//! free loopback port with its own storage and config, optionally with TLS (self-signed certificate for
//! 127.0.0.1) and htpasswd or token auth; OCI layouts built here and copied into it with skopeo, or blobs and
//! manifests PUT with the registry API (foreign layers may have URLs on 127.0.0.1); a fault proxy and a token
//! server (see `net.rs`). Nothing here talks to any address but 127.0.0.1.
#![allow(dead_code)]

pub mod images;
pub mod net;

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vessel_image::registry::Progress;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            remove_stale();
        }
        let path =
            std::env::temp_dir().join(format!("vessel-registry-test-{}-{n}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Removes the directories of test processes that are gone (fixtures in statics are never dropped).
fn remove_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("vessel-registry-test-") else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Fails the test, naming the missing tool and how to get it.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run scripts/test-deps.sh (Debian packages docker-registry, skopeo, openssl, apache2-utils)");
}

/// A loopback port nothing listens on (right now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A certificate and key (RSA): self-signed, or (`server_cert`) signed by a test CA.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed certificate for `cn` (a CA; also what the token signer uses).
pub fn make_cert(dir: &Path, cn: &str) -> Cert {
    require("openssl");
    let cert = dir.join(format!("{cn}.crt"));
    let key = dir.join(format!("{cn}.key"));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()));
    Cert { cert, key }
}

/// A server certificate for IP 127.0.0.1 signed by `ca`.
pub fn server_cert(dir: &Path, ca: &Cert) -> Cert {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let ext = dir.join("server.ext");
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .stderr(Stdio::null()));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-set_serial", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca.cert)
        .arg("-CAkey")
        .arg(&ca.key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()));
    Cert { cert, key }
}

#[derive(Default)]
pub struct RegistryConfig {
    pub tls: Option<(PathBuf, PathBuf)>,
    pub htpasswd: Option<PathBuf>,
    /// (realm, service, issuer, root cert bundle)
    pub token: Option<(String, String, String, PathBuf)>,
}

/// A running docker-registry; killed on drop, and (PR_SET_PDEATHSIG) when the test process dies.
pub struct Registry {
    pid: u32,
    pub addr: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Registry {
    pub fn start(config: RegistryConfig) -> Registry {
        require("docker-registry");
        let dir = TempDir::new("registry");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\nvalidation:\n  manifests:\n    urls:\n      \
             allow:\n        - '^https?://127\\.0\\.0\\.1[:/]'\nhttp:\n  addr: {addr}\n  secret: vessel-test\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = &config.tls {
            yaml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some(path) = &config.htpasswd {
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: vessel-test\n    path: {}\n",
                path.display()
            );
        }
        if let Some((realm, service, issuer, bundle)) = &config.token {
            yaml += &format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    \
                 rootcertbundle: {}\n",
                bundle.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, yaml).unwrap();
        let log = dir.path().join("registry.log");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(dir.path().join("registry.err")).unwrap());
        let pid = spawn_tied(cmd);
        let registry = Registry {
            pid,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&registry.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        registry
    }

    /// Everything the registry logged so far (access log and application log).
    pub fn log(&self) -> String {
        let mut out = fs::read_to_string(&self.log).unwrap_or_default();
        out += &fs::read_to_string(self.log.with_file_name("registry.err")).unwrap_or_default();
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The spawning thread reaps it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::SIGKILL,
        );
    }
}

/// Spawns `cmd` from a thread that lives as long as the child, with PR_SET_PDEATHSIG (which fires when the
/// spawning *thread* ends): a registry held in a `static` fixture (never dropped) still dies with the tests.
fn spawn_tied(mut cmd: Command) -> u32 {
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || match cmd.spawn() {
        Ok(mut child) => {
            let _ = tx.send(Ok(child.id()));
            let _ = child.wait();
        }
        Err(e) => {
            let _ = tx.send(Err(format!("cannot start {cmd:?}: {e}")));
        }
    });
    rx.recv().unwrap().unwrap_or_else(|e| panic!("{e}"))
}

/// `skopeo copy` from an OCI layout into the registry (plain HTTP or TLS without verification).
pub fn skopeo_copy_in(layout: &Path, tag: &str, dest: &str, all: bool, creds: Option<&str>) {
    require("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    if let Some(creds) = creds {
        cmd.arg("--dest-creds").arg(creds);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"));
    run(&mut cmd);
}

/// The raw manifest of `src` ("127.0.0.1:port/repo:tag") as skopeo reads it.
pub fn skopeo_raw_manifest(src: &str, creds: Option<&str>) -> Vec<u8> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "inspect", "--raw", "--tls-verify=false"]);
    if let Some(creds) = creds {
        cmd.arg("--creds").arg(creds);
    }
    run(cmd.arg(format!("docker://{src}"))).into_bytes()
}

/// `skopeo copy` out of the registry into a `dir:` destination (every blob fetched and verified by skopeo).
pub fn skopeo_copy_out(src: &str, dest: &Path, creds: Option<&str>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"]);
    if let Some(creds) = creds {
        cmd.arg("--src-creds").arg(creds);
    }
    run(cmd
        .arg(format!("docker://{src}"))
        .arg(format!("dir:{}", dest.display())));
}

/// An HTTP agent that returns 4xx/5xx answers instead of failing on them (their body says why).
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Asserts the answer's status, with the registry's explanation when it is not the one expected.
fn expect(
    what: &str,
    mut response: ureq::http::Response<ureq::Body>,
    status: u16,
) -> ureq::http::Response<ureq::Body> {
    if response.status().as_u16() != status {
        let body = response.body_mut().read_to_string().unwrap_or_default();
        panic!("{what}: the registry answered {}: {body}", response.status());
    }
    response
}

/// PUTs a manifest with the registry API (plain HTTP, no auth): what skopeo would not write, such as a
/// Docker v2 schema 2 manifest over zstd or foreign layers.
pub fn put_manifest(addr: &str, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
    let response = agent()
        .put(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .header("content-type", media_type)
        .send(body)
        .unwrap();
    expect(&format!("PUT manifest {repo}:{tag}"), response, 201);
}

/// Uploads a blob with the registry API (POST, then one PUT with the digest); returns its digest.
pub fn put_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = images::digest(bytes);
    let what = format!("upload of {digest} to {repo}");
    let response = agent()
        .post(format!("http://{addr}/v2/{repo}/blobs/uploads/"))
        .send_empty()
        .unwrap();
    let response = expect(&what, response, 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{addr}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let response = agent()
        .put(format!("{url}{sep}digest={}", digest.replace(':', "%3A")))
        .header("content-type", "application/octet-stream")
        .send(bytes)
        .unwrap();
    expect(&what, response, 201);
    digest
}

/// Records every progress call.
#[derive(Default)]
pub struct Recorder {
    pub started: Mutex<Vec<(String, u64)>>,
    pub advanced: Mutex<std::collections::HashMap<String, u64>>,
    pub done: Mutex<Vec<String>>,
    pub messages: Mutex<Vec<String>>,
}

impl Progress for Recorder {
    fn layer_start(&self, digest: &str, size: u64) {
        self.started.lock().unwrap().push((digest.to_string(), size));
    }
    fn layer_advance(&self, digest: &str, bytes: u64) {
        *self
            .advanced
            .lock()
            .unwrap()
            .entry(digest.to_string())
            .or_default() += bytes;
    }
    fn layer_done(&self, digest: &str) {
        self.done.lock().unwrap().push(digest.to_string());
    }
    fn message(&self, line: &str) {
        self.messages.lock().unwrap().push(line.to_string());
    }
}

impl Recorder {
    pub fn messages(&self) -> String {
        self.messages.lock().unwrap().join("\n")
    }
}

/// sha256 of a file's bytes as "sha256:<hex>".
pub fn file_digest(path: &Path) -> String {
    let mut bytes = Vec::new();
    fs::File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    images::digest(&bytes)
}
