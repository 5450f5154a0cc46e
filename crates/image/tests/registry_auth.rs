//! TLS and authentication against real docker-registry instances on loopback, both with a self-signed
//! certificate for 127.0.0.1 (given as `ca_file`): one with htpasswd (HTTP Basic), one with token auth
//! (bearer tokens from a token server run by the test).

mod registry_support;

use std::process::Command;
use std::sync::OnceLock;

use registry_support::images::build_layout;
use registry_support::net::{TokenServer, ISSUER, SERVICE};
use registry_support::*;
use vessel_image::reference::Reference;
use vessel_image::registry::{pull, push, NoProgress, RegistryError, RegistryOptions};
use vessel_image::store::Store;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

struct Fixture {
    basic: Registry,
    token: Registry,
    tokens: TokenServer,
    ca: std::path::PathBuf,
    _dirs: Vec<TempDir>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        require("htpasswd");
        let dir = TempDir::new("auth");
        let ca = make_cert(dir.path(), "vessel-test-ca");
        let tls = server_cert(dir.path(), &ca);
        let signer = make_cert(dir.path(), "token-signer");
        let htpasswd = dir.path().join("htpasswd");
        let line = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
        std::fs::write(&htpasswd, line).unwrap();

        let basic = Registry::start(RegistryConfig {
            tls: Some((tls.cert.clone(), tls.key.clone())),
            htpasswd: Some(htpasswd),
            token: None,
        });
        let tokens = TokenServer::start(&signer.cert, &signer.key, USER, PASSWORD);
        let token = Registry::start(RegistryConfig {
            tls: Some((tls.cert.clone(), tls.key.clone())),
            htpasswd: None,
            token: Some((
                tokens.realm(),
                SERVICE.to_string(),
                ISSUER.to_string(),
                signer.cert.clone(),
            )),
        });
        let layout = build_layout();
        let creds = format!("{USER}:{PASSWORD}");
        for registry in [&basic, &token] {
            let dest = format!("{}/busybox:latest", registry.addr);
            skopeo_copy_in(layout.path(), "single", &dest, false, Some(&creds));
        }
        Fixture {
            basic,
            token,
            tokens,
            ca: ca.cert,
            _dirs: vec![dir, layout.dir],
        }
    })
}

fn opts(f: &Fixture, password: Option<&str>) -> RegistryOptions {
    RegistryOptions {
        ca_file: Some(f.ca.clone()),
        username: password.map(|_| USER.to_string()),
        password: password.map(str::to_string),
        ..RegistryOptions::default()
    }
}

fn reference(addr: &str, name: &str) -> Reference {
    Reference::parse(&format!("{addr}/{name}")).unwrap()
}

fn new_store() -> (Store, TempDir) {
    let dir = TempDir::new("store");
    (Store::open(dir.path()).unwrap(), dir)
}

#[test]
fn basic_auth_over_tls_pull_and_push() {
    let f = fixture();
    let (store, _dir) = new_store();
    let r = reference(&f.basic.addr, "busybox:latest");
    let record = pull(&store, &r, &opts(f, Some(PASSWORD)), &NoProgress).unwrap();
    let creds = format!("{USER}:{PASSWORD}");
    let raw = skopeo_raw_manifest(&r.to_string(), Some(&creds));
    assert_eq!(images::digest(&raw), record.manifest.to_string());

    let remote = reference(&f.basic.addr, "pushed/busybox:v1");
    push(
        &store,
        &r.to_string(),
        &remote,
        &opts(f, Some(PASSWORD)),
        &NoProgress,
    )
    .unwrap();
    let raw = skopeo_raw_manifest(&remote.to_string(), Some(&creds));
    assert_eq!(images::digest(&raw), record.manifest.to_string());
}

#[test]
fn basic_auth_refuses_wrong_or_missing_credentials() {
    let f = fixture();
    let (store, _dir) = new_store();
    let r = reference(&f.basic.addr, "busybox:latest");
    for password in [Some("wrong"), None] {
        let err = pull(&store, &r, &opts(f, password), &NoProgress).unwrap_err();
        assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
        assert!(err.to_string().contains(&r.to_string()), "{err}");
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn tls_needs_the_ca_or_insecure() {
    let f = fixture();
    let (store, _dir) = new_store();
    let r = reference(&f.basic.addr, "busybox:latest");
    let no_ca = RegistryOptions {
        ca_file: None,
        ..opts(f, Some(PASSWORD))
    };
    let err = pull(&store, &r, &no_ca, &NoProgress).unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");

    let insecure = RegistryOptions {
        insecure: true,
        ..no_ca
    };
    pull(&store, &r, &insecure, &NoProgress).unwrap();

    let missing = RegistryOptions {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..opts(f, None)
    };
    let err = pull(&store, &r, &missing, &NoProgress).unwrap_err();
    assert!(matches!(err, RegistryError::CaFile { .. }), "{err:?}");
}

#[test]
fn token_auth_pull_and_mounting_push() {
    let f = fixture();
    let (store, _dir) = new_store();
    let r = reference(&f.token.addr, "busybox:latest");
    let record = pull(&store, &r, &opts(f, Some(PASSWORD)), &NoProgress).unwrap();
    assert!(
        f.tokens.issued().iter().any(|s| s == "repository:busybox:pull"),
        "{:?}",
        f.tokens.issued()
    );

    let remote = reference(&f.token.addr, "tpushed:v1");
    let progress = Recorder::default();
    push(
        &store,
        &r.to_string(),
        &remote,
        &opts(f, Some(PASSWORD)),
        &progress,
    )
    .unwrap();
    let issued = f.tokens.issued();
    assert!(
        issued
            .iter()
            .any(|s| s == "repository:tpushed:pull,push repository:busybox:pull"),
        "{issued:?}"
    );
    assert!(
        progress.messages().contains("mounted from busybox"),
        "{}",
        progress.messages()
    );
    let raw = skopeo_raw_manifest(&remote.to_string(), Some(&format!("{USER}:{PASSWORD}")));
    assert_eq!(images::digest(&raw), record.manifest.to_string());
}

#[test]
fn token_auth_refuses_wrong_or_missing_credentials() {
    let f = fixture();
    let (store, _dir) = new_store();
    let r = reference(&f.token.addr, "busybox:latest");
    for password in [Some("wrong"), None] {
        let err = pull(&store, &r, &opts(f, password), &NoProgress).unwrap_err();
        assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
        assert!(err.to_string().contains("token endpoint"), "{err}");
    }
    assert!(store.list().unwrap().is_empty());
}
