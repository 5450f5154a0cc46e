//! The API on TCP: TLS always, authentication always. Certificates are made here with openssl.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Daemon, IMAGE};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate it signed for `cn` (with 127.0.0.1 as its address): (ca.pem, cert.pem, key.pem).
fn pki(dir: &Path, tag: &str, cn: &str) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (ca_key, ca, key, csr, cert) = (
        format!("{tag}-ca.key"),
        format!("{tag}-ca.pem"),
        format!("{tag}.key"),
        format!("{tag}.csr"),
        format!("{tag}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN={tag} test CA"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    let ext = dir.join(format!("{tag}.ext"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
        ],
    );
    (dir.join(ca), dir.join(cert), dir.join(key))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_needs_tls_and_credentials_and_bad_ones_change_nothing() {
    let dir = std::env::temp_dir().join(format!("vessel-pki-{}", std::process::id()));
    let (ca, cert, key) = pki(&dir, "server", "vesseld");
    let (client_ca, client_cert, client_key) = pki(&dir, "client", "alice");
    let (_, rogue_cert, rogue_key) = pki(&dir, "rogue", "mallory");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "# who may come in\ns3cret-token\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_on_host_network(
        "remote",
        &[
            "--listen-tcp",
            &addr,
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
            "--tokens-file",
            &tokens.display().to_string(),
            "--tls-client-ca",
            &client_ca.display().to_string(),
        ],
    );
    let host = format!("tcp://{addr}");
    let remote = |extra: &[&str], args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vessel"));
        c.env_remove("VESSEL_TOKEN")
            .args(["--host", &host, "--tls-ca", &ca.display().to_string()])
            .args(extra)
            .args(args);
        c.output().unwrap()
    };
    let one_line = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    // No credentials: 401; a wrong token: 403; neither creates anything.
    let err = one_line(&remote(&[], &["run", "-d", "--network", "none", IMAGE, "true"]));
    assert!(err.contains("Authentication required"), "{err}");
    let err = one_line(&remote(
        &["--token", "guess"],
        &["run", "-d", "--network", "none", IMAGE, "true"],
    ));
    assert!(err.contains("not accepted"), "{err}");
    let (status, _) = raw_https(&addr, &ca, None);
    assert_eq!(status, 401);
    // A client certificate from another CA fails the handshake.
    let err = one_line(&remote(
        &[
            "--tls-cert",
            &rogue_cert.display().to_string(),
            "--tls-key",
            &rogue_key.display().to_string(),
        ],
        &["ps"],
    ));
    assert!(err.contains("UnknownCA") || err.contains("certificate"), "{err}");
    assert_eq!(
        d.ok(&["ps", "-a", "-q"]),
        "",
        "a refused request changed something"
    );
    // The right token, or a certificate from the client CA: the whole API, streams included.
    let out = remote(
        &["--token", "s3cret-token"],
        &[
            "run",
            "--network",
            "none",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "echo over tls; exit 4",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
    let cert_args = [
        "--tls-cert",
        &client_cert.display().to_string(),
        "--tls-key",
        &client_key.display().to_string(),
    ];
    let out = remote(
        &cert_args,
        &[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            "viacert",
            IMAGE,
            "sleep",
            "30",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = remote(&cert_args, &["exec", "viacert", "echo", "hi"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    // Plain HTTP on the TLS port gets nowhere.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut s, b"GET /1.0 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("api_version"),
        "plain HTTP was answered"
    );
    d.assert_clean_after_rm_all();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tcp_without_a_way_to_authenticate_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("vessel-pki-noauth-{}", std::process::id()));
    let (_, cert, key) = pki(&dir, "server", "vesseld");
    let out = Command::new(Path::new(env!("CARGO_BIN_EXE_vessel")).with_file_name("vesseld"))
        .args([
            "--root",
            &dir.join("root").display().to_string(),
            "--run-dir",
            &dir.join("run").display().to_string(),
        ])
        .args([
            "--listen-tcp",
            "127.0.0.1:0",
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs a way to authenticate"),
        "{err}"
    );
    assert!(!dir.join("root").join("vesseld.db").exists(), "it started anyway");
    let _ = std::fs::remove_dir_all(dir);
}

/// One HTTPS GET /1.0 with curl (a second, independent client): its status.
fn raw_https(addr: &str, ca: &Path, token: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
        &ca.display().to_string(),
    ]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c.arg(format!("https://{addr}/1.0")).output().expect("curl runs");
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}
