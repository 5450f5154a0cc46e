//! Images through vesseld, against a real registry (Debian's docker-registry on a loopback port): push and
//! pull as operations with progress, a `run` that pulls its image on demand, cancel (by the API and by
//! Ctrl-C) of a pull from a slow registry, and instances that keep their image when its name goes.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, IMAGE};

/// A plain-HTTP docker-registry on 127.0.0.1, its storage in `dir`; killed on drop.
struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let exe = Command::new("sh")
            .args(["-c", "command -v docker-registry"])
            .output()
            .unwrap();
        assert!(
            exe.status.success(),
            "docker-registry is missing: run scripts/test-deps.sh (Debian package docker-registry)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: vessel-test\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, addr }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to `upstream` that passes the answers at about 800 KiB/s: a slow registry.
fn slow_proxy(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 || c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// busybox plus 24 MiB that does not compress: an image whose pull takes a while through the slow proxy.
fn big_rootfs(d: &Daemon) -> PathBuf {
    let dir = d.base.join("big-rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
    assert!(Command::new(script).arg(&dir).status().unwrap().success());
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut data = vec![0u8; 24 << 20];
    random.read_exact(&mut data).unwrap();
    std::fs::write(dir.join("noise"), data).unwrap();
    dir
}

fn operations(d: &Daemon) -> Vec<serde_json::Value> {
    d.json("GET", "/1.0/operations", "").as_array().unwrap().clone()
}

/// `vessel pull REFERENCE` started, and the id of its operation once bytes arrive (operations in `earlier`
/// left out).
fn pull_under_way(d: &Daemon, reference: &str, earlier: &[String]) -> (Child, String) {
    let pull = d
        .cmd(&["pull", reference])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut id = String::new();
    d.until(60, "the pull's first bytes", || {
        operations(d).iter().any(|o| {
            let this = o["id"].as_str().unwrap_or_default();
            let moving = o["kind"] == "pull"
                && o["status"] == "running"
                && !earlier.iter().any(|e| e == this)
                && o["progress"]["bytes_done"].as_u64().unwrap_or(0) > 0;
            if moving {
                id = this.to_string();
            }
            moving
        })
    });
    (pull, id)
}

/// busybox plus a file naming `tag`: an image of its own (its own layer and id).
fn marked_rootfs(d: &Daemon, tag: &str) -> PathBuf {
    let dir = d.base.join(format!("rootfs-{tag}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
    assert!(Command::new(script).arg(&dir).status().unwrap().success());
    std::fs::write(dir.join("marker"), tag).unwrap();
    dir
}

#[test]
fn push_pull_and_run_on_demand_through_the_daemon_keep_images_for_their_instances() {
    let d = Daemon::start_on_host_network("images", &[]);
    let reg = Registry::start(&d.base.join("registry"));
    let remote = format!("{}/t/marked:1", reg.addr);
    d.ok(&[
        "image",
        "import",
        &marked_rootfs(&d, "m1").display().to_string(),
        "t/marked",
    ]);
    // Push: an operation; the CLI waits for it and says where it went. Then the local copy goes.
    let out = d.ok(&["push", "t/marked", &remote]);
    assert!(out.contains(&format!("Pushed {remote}")), "{out}");
    d.ok(&["rmi", "t/marked"]);
    d.ok(&["image", "prune"]);
    let layers = || std::fs::read_dir(d.root.join("layers")).unwrap().count();
    let base_layers = layers();

    // A run whose image is not in the store pulls it first (202 + an operation), with progress on stderr.
    let run = d.vessel(&[
        "run",
        "--network",
        "none",
        "--rm",
        "--name",
        "ondemand",
        &remote,
        "cat",
        "/marker",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "m1");
    assert!(stderr.is_empty(), "progress goes to a terminal only: {stderr}");
    let images = d.ok(&["images", "--format", "json"]);
    assert!(images.contains(&remote), "{images}");
    let ops = operations(&d);
    let create = ops
        .iter()
        .find(|o| o["kind"] == "create")
        .expect("a create operation");
    assert_eq!(create["status"], "success");
    assert_eq!(create["result"]["name"], "ondemand");
    assert!(
        create["progress"]["blobs_total"].as_u64().unwrap() >= 2,
        "{create}"
    );
    assert_eq!(
        create["progress"]["bytes_done"], create["progress"]["bytes_total"],
        "{create}"
    );

    // --pull never with an image not in the store: 404 at once, nothing made.
    let err = d.fails(&[
        "create",
        "--network",
        "none",
        "--pull",
        "never",
        &format!("{}/t/none:1", reg.addr),
    ]);
    assert!(err.contains("not in the image store"), "{err}");
    // A pull of what the registry does not have fails as an operation, with the registry's reason.
    let err = d.fails(&["pull", &format!("{}/t/none:1", reg.addr)]);
    assert!(err.contains("t/none"), "{err}");

    // An instance holds its image: rmi is refused while it exists, -f drops the name, prune keeps its
    // layers and the instance still starts; once it is deleted, prune frees them.
    d.ok(&[
        "create",
        "--network",
        "none",
        "--name",
        "holder",
        &remote,
        "cat",
        "/marker",
    ]);
    let err = d.fails(&["rmi", &remote]);
    assert!(err.contains("holder"), "{err}");
    d.ok(&["rmi", "-f", &remote]);
    d.ok(&["image", "prune"]);
    assert!(!d.ok(&["images"]).contains("t/marked"));
    assert_eq!(layers(), base_layers + 1, "the held image's layer stays");
    d.ok(&["start", "holder"]);
    assert_eq!(d.ok(&["wait", "holder"]).trim(), "0");
    assert_eq!(d.ok(&["logs", "holder"]).trim(), "m1");
    d.ok(&["rm", "holder"]);
    d.ok(&["image", "prune"]);
    assert_eq!(layers(), base_layers, "deleting the instance released its image");

    // An asynchronous delete: 202 with an operation, which ends with the instance gone.
    d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "later",
        IMAGE,
        "sleep",
        "300",
    ]);
    let (status, text) = d.api("DELETE", "/1.0/instances/later?force=true&async=true", "");
    assert_eq!(status, 202, "{text}");
    let op: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(op["kind"], "delete");
    let done = d.json(
        "GET",
        &format!("/1.0/operations/{}/wait?timeout=30", op["id"].as_str().unwrap()),
        "",
    );
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(d.api("GET", "/1.0/instances/later", "").0, 404);
    d.assert_clean_after_rm_all();
}

#[test]
fn a_slow_pull_shows_progress_and_is_cancelled_by_the_api_and_by_ctrl_c() {
    let d = Daemon::start_on_host_network("pullcancel", &[]);
    let reg = Registry::start(&d.base.join("registry"));
    d.ok(&["image", "import", &big_rootfs(&d).display().to_string(), "t/big"]);
    d.ok(&["push", "t/big", &format!("{}/t/big:1", reg.addr)]);
    d.ok(&["rmi", "t/big"]);
    d.ok(&["image", "prune"]);
    let slow = format!("{}/t/big:1", slow_proxy(reg.addr.clone()));

    // 1. Cancelled through the API once bytes arrive; `vessel pull` ends with the cancel as its error.
    let (pull, id) = pull_under_way(&d, &slow, &[]);
    let (status, text) = d.api("DELETE", &format!("/1.0/operations/{id}"), "");
    assert_eq!(status, 202, "{text}");
    let started = Instant::now();
    let out = pull.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Cancelled"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the cancel took {:?}",
        started.elapsed()
    );
    let op = d.json("GET", &format!("/1.0/operations/{id}"), "");
    assert_eq!(op["status"], "cancelled", "{op}");
    assert!(
        op["progress"]["bytes_done"].as_u64().unwrap() < op["progress"]["bytes_total"].as_u64().unwrap(),
        "{op}"
    );
    let (status, _) = d.api("DELETE", &format!("/1.0/operations/{id}"), "");
    assert_eq!(status, 409, "an ended operation cannot be cancelled again");
    assert!(
        !d.ok(&["images"]).contains("t/big"),
        "a cancelled pull names no image"
    );

    // 2. Ctrl-C on `vessel pull` cancels the daemon's operation too.
    let (pull, id2) = pull_under_way(&d, &slow, std::slice::from_ref(&id));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pull.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = pull.wait_with_output().unwrap();
    assert!(!out.status.success());
    let op = d.json("GET", &format!("/1.0/operations/{id2}/wait?timeout=10"), "");
    assert_eq!(op["status"], "cancelled", "{op}");

    // 3. The same image straight from the registry: the partial blob is resumed, the pull completes.
    d.ok(&["pull", &format!("{}/t/big:1", reg.addr)]);
    assert!(d.ok(&["images"]).contains("t/big"));
    d.assert_clean_after_rm_all();
}
