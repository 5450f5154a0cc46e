//! vessel-vmm's HTTP API as a client sees it: the real binary with `--api-sock`, hand-made ELF
//! guests, and requests over the unix socket. Covers the lifecycle (configure, start, pause,
//! resume, power-off), wrong-state and malformed requests, HTTP framing and limits, the socket
//! file's life, and that api/openapi.json documents exactly what the server answers.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use vessel_vmm::arch::layout::ACPI_GED_STATUS_PORT;
use vessel_vmm::handmade::{
    elf_kernel, power_off, print, print_al, spin, wait_for_power_button, wait_for_serial_input,
};
use vessel_vmm::kvm::Flavour;

const OPENAPI: &str = include_str!("../api/openapi.json");

fn pvm() -> bool {
    Flavour::detect() == Flavour::Pvm
}

mod common;
use common::Scratch;

/// Prints "up", then keeps running without exits.
fn spinner() -> Vec<u8> {
    elf_kernel(&[print(b"up"), spin()].concat())
}

/// Prints "up", waits until COM1 has received a byte, prints "bye" and powers off: a guest
/// whose end the test decides (by writing to the VMM's stdin).
fn waiting_guest() -> Vec<u8> {
    elf_kernel(&[print(b"up"), wait_for_serial_input(), print(b"bye"), power_off()].concat())
}

/// Prints "up", polls the ACPI event device's status register until the power-button bit is set,
/// prints "bye" and powers off: a guest that shuts down when its power button is pressed (by
/// polling, since a hand-made guest has no interrupt handler).
fn power_button_guest() -> Vec<u8> {
    elf_kernel(&[print(b"up"), wait_for_power_button(), print(b"bye"), power_off()].concat())
}

/// Prints "up", waits for a byte on COM1, then prints the ACPI event device's status register
/// (reading clears it) and powers off.
fn ged_reporting_guest() -> Vec<u8> {
    let [ged_low, ged_high] = ACPI_GED_STATUS_PORT.to_le_bytes();
    let read_ged = vec![
        0xba, ged_low, ged_high, 0, 0,    // mov edx, GED status register
        0xec, // in al, dx
    ];
    elf_kernel(
        &[
            print(b"up"),
            wait_for_serial_input(),
            read_ged,
            print_al(),
            power_off(),
        ]
        .concat(),
    )
}

/// A vessel-vmm process serving its API; killed if the test ends first.
struct Vmm {
    child: Child,
    socket: PathBuf,
}

impl Vmm {
    /// Starts the binary with `--api-sock` in `dir` and `args`, and waits for the socket.
    fn spawn(dir: &Scratch, args: &[&str]) -> Vmm {
        let mut vmm = Self::spawn_only(&dir.socket(), args);
        vmm.wait_for_socket();
        vmm
    }

    /// A new process restoring `snapshot` behind an API at `dir/restored.sock`, COM1 on stdio.
    fn restore(dir: &Scratch, snapshot: &Path) -> Vmm {
        let mut vmm = Self::spawn_only(
            &dir.0.join("restored.sock"),
            &["--restore", snapshot.to_str().unwrap(), "--serial", "stdio"],
        );
        vmm.wait_for_socket();
        vmm
    }

    fn spawn_only(socket: &Path, args: &[&str]) -> Vmm {
        Self::spawn_under(&[], socket, args)
    }

    /// Like `spawn_only`, run through `wrapper` (a command that execs its arguments, such as
    /// `unshare --net`, so the child's pid stays the VMM's).
    fn spawn_under(wrapper: &[&str], socket: &Path, args: &[&str]) -> Vmm {
        let binary = env!("CARGO_BIN_EXE_vessel-vmm");
        let (program, prefix) = match wrapper.split_first() {
            Some((program, rest)) => (*program, [rest, &[binary]].concat()),
            None => (binary, vec![]),
        };
        let child = Command::new(program)
            .args(prefix)
            .arg("--api-sock")
            .arg(socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Vmm {
            child,
            socket: socket.to_owned(),
        }
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("vessel-vmm exited with {status}: {}", self.stderr());
            }
            assert!(Instant::now() < deadline, "no API socket after 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket)
    }

    /// The next `n` bytes the guest wrote to COM1 (the VMM's stdout).
    fn guest_output(&mut self, n: usize) -> String {
        let mut buf = vec![0u8; n];
        self.child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn type_to_guest(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "vessel-vmm still running after 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if self.child.try_wait().unwrap().is_some() {
            let _ = self.child.stderr.as_mut().unwrap().read_to_string(&mut text);
        }
        text
    }

    fn signal(&self, signal: i32) {
        // SAFETY: sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer from the server.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    fn fault(&self) -> String {
        self.json()["fault_message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Asserts the status and, for errors, that the fault message contains `needle`.
    #[track_caller]
    fn expect(&self, status: u16, needle: &str) -> &Self {
        assert_eq!(self.status, status, "{self:?}");
        if status >= 400 {
            assert!(self.fault().contains(needle), "{needle:?} in {:?}", self.fault());
        }
        self
    }
}

/// A keep-alive HTTP/1.1 connection to the API.
struct Client {
    stream: UnixStream,
    input: Vec<u8>,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            stream,
            input: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.send(format!("{head}{body}").as_bytes());
        self.reply()
    }

    fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, None)
    }
    fn put(&mut self, path: &str, body: Value) -> Reply {
        self.request("PUT", path, Some(&body))
    }
    fn patch(&mut self, path: &str, body: Value) -> Reply {
        self.request("PATCH", path, Some(&body))
    }

    fn state(&mut self) -> String {
        let reply = self.get("/");
        reply.expect(200, "");
        reply.json()["state"].as_str().unwrap().to_owned()
    }

    /// Reads one response; panics if the server closes first.
    fn reply(&mut self) -> Reply {
        self.try_reply(false).expect("the server closed the connection")
    }

    /// A response to HEAD: its Content-Length describes a body that is not sent.
    fn reply_to_head(&mut self) -> Reply {
        self.try_reply(true).expect("the server closed the connection")
    }

    fn try_reply(&mut self, to_head: bool) -> Option<Reply> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&self.input).unwrap() {
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let status = response.code.unwrap();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap())
                    * usize::from(!to_head);
                if self.input.len() >= head + length {
                    let body = String::from_utf8(self.input[head..head + length].to_vec()).unwrap();
                    self.input.drain(..head + length);
                    return Some(Reply {
                        status,
                        headers,
                        body,
                    });
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading a reply: {e}"),
            }
        }
    }

    /// Whether the server has closed the connection (after any replies already read).
    fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        self.input.is_empty() && matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

#[test]
fn configured_through_the_api_then_started_paused_resumed_and_powered_off() {
    let dir = Scratch::new("api", "lifecycle");
    let kernel = dir.file("k", &waiting_guest());
    let disk = dir.file("disk.img", &vec![0u8; 1 << 20]);
    let mut vmm = Vmm::spawn(&dir, &[]);
    let mut api = vmm.client();

    let info = api.get("/").expect(200, "").json();
    assert_eq!(info["state"], "Not started");
    assert_eq!(info["vmm_version"], env!("CARGO_PKG_VERSION"));
    assert!(info["id"].as_str().unwrap().starts_with("vessel-vmm-"), "{info}");
    let before = api.get("/metrics").expect(200, "").json();
    assert_eq!(
        (&before["vm_uptime_ms"], &before["devices"]),
        (&Value::Null, &json!([]))
    );
    api.patch("/vm", json!({"state": "Paused"}))
        .expect(409, "not running");

    let machine = json!({"vcpu_count": 2, "mem_size_mib": 32, "pvm_guest_kernel": pvm()});
    api.put("/machine-config", machine.clone()).expect(204, "");
    assert_eq!(api.get("/machine-config").expect(200, "").json(), machine);
    api.put("/boot-source", json!({"kernel_image_path": kernel}))
        .expect(204, "");
    let drive = json!({"drive_id": "scratch", "path_on_host": disk, "is_read_only": false});
    api.put("/drives/scratch", drive.clone()).expect(204, "");
    let config = api.get("/vm/config").expect(200, "").json();
    assert_eq!(
        (&config["cpus"], &config["memory_mib"], &config["disks"][0]["id"]),
        (&json!(2), &json!(32), &json!("scratch"))
    );

    api.put("/actions", json!({"action_type": "InstanceStart"}))
        .expect(204, "");
    assert_eq!(vmm.guest_output(2), "up");
    assert_eq!(api.state(), "Running");
    api.put("/actions", json!({"action_type": "InstanceStart"}))
        .expect(409, "already started");
    api.put("/boot-source", json!({"kernel_image_path": kernel}))
        .expect(409, "before the VM starts");
    api.put("/machine-config", machine)
        .expect(409, "before the VM starts");
    api.patch("/machine-config", json!({"vcpu_count": 1}))
        .expect(409, "before the VM starts");
    api.put("/drives/scratch", drive)
        .expect(409, "before the VM starts");

    api.patch("/vm", json!({"state": "Paused"})).expect(204, "");
    assert_eq!(api.state(), "Paused");
    api.patch("/vm", json!({"state": "Paused"})).expect(204, "");
    // A paused guest cannot see the byte that would end it.
    vmm.type_to_guest(b"x");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        vmm.child.try_wait().unwrap().is_none(),
        "the guest ran while paused"
    );
    assert_eq!(api.state(), "Paused");
    let metrics = api.get("/metrics").expect(200, "").json();
    assert_eq!(
        (
            &metrics["state"],
            &metrics["pause_count"],
            &metrics["vcpu_count"],
            &metrics["drive_count"]
        ),
        (&json!("Paused"), &json!(1), &json!(2), &json!(1))
    );
    assert!(metrics["paused_ms"].as_u64().unwrap() >= 300, "{metrics}");
    assert!(metrics["vm_uptime_ms"].as_u64().is_some(), "{metrics}");
    // The disk first (its window comes first), then the rng; this guest drives neither.
    let kinds: Vec<&Value> = metrics["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["kind"])
        .collect();
    assert_eq!(kinds, [&json!("block"), &json!("rng")], "{metrics}");

    api.patch("/vm", json!({"state": "Resumed"})).expect(204, "");
    let status = vmm.wait();
    assert_eq!(status.code(), Some(0), "{}", vmm.stderr());
    assert_eq!(vmm.guest_output(3), "bye");
    assert!(vmm.stderr().contains("vessel-vmm: guest powered off"));
    assert!(!dir.socket().exists(), "the socket is removed on exit");
}

/// NICs and vsock configured through the API are in the config and, at InstanceStart, the VM
/// really has them: the taps exist and the vsock socket listens. The VMM runs in a private
/// network namespace, so its taps never touch the host and vanish with it.
#[test]
fn nics_and_vsock_configured_through_the_api_exist_once_started() {
    let dir = Scratch::new("api", "nics");
    let kernel = dir.file("k", &spinner());
    let uds = dir.0.join("v.sock");
    let mut vmm = Vmm::spawn_under(&["unshare", "--net"], &dir.socket(), &["--memory", "32"]);
    vmm.wait_for_socket();
    let mut api = vmm.client();
    api.patch("/machine-config", json!({"pvm_guest_kernel": pvm()}))
        .expect(204, "");
    api.put("/boot-source", json!({"kernel_image_path": kernel}))
        .expect(204, "");
    let eth0 = json!({"iface_id": "eth0", "host_dev_name": "vapi0", "guest_mac": "52:54:00:00:00:0a"});
    api.put("/network-interfaces/eth0", eth0.clone()).expect(204, "");
    api.put(
        "/network-interfaces/eth1",
        json!({"iface_id": "eth1", "host_dev_name": "vapi1"}),
    )
    .expect(204, "");
    // The same id again replaces the NIC: vapi1 is never created.
    api.put(
        "/network-interfaces/eth1",
        json!({"iface_id": "eth1", "host_dev_name": "vapi2"}),
    )
    .expect(204, "");
    api.put("/vsock", json!({"guest_cid": 9, "uds_path": "/unused.sock"}))
        .expect(204, "");
    api.put("/vsock", json!({"guest_cid": 3, "uds_path": uds}))
        .expect(204, "");
    let config = api.get("/vm/config").expect(200, "").json();
    assert_eq!(
        config["nics"],
        json!([
            {"tap": "vapi0", "mac": "52:54:00:00:00:0a", "id": "eth0"},
            {"tap": "vapi2", "mac": null, "id": "eth1"},
        ])
    );
    assert_eq!(config["vsock"], json!({"guest_cid": 3, "uds_path": uds}));

    api.put("/actions", json!({"action_type": "InstanceStart"}))
        .expect(204, "");
    assert_eq!(vmm.guest_output(2), "up");
    let links = Command::new("nsenter")
        .args([
            "-t",
            &vmm.child.id().to_string(),
            "-n",
            "ip",
            "-o",
            "link",
            "show",
        ])
        .output()
        .expect("nsenter (util-linux) and ip (iproute2) are needed for this test");
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert!(
        links.contains("vapi0:") && links.contains("vapi2:") && !links.contains("vapi1:"),
        "{links}"
    );
    assert!(uds.exists(), "the vsock socket listens at {}", uds.display());
    api.put("/network-interfaces/eth0", eth0)
        .expect(409, "Network interfaces can only be changed before the VM starts");
    api.put("/vsock", json!({"guest_cid": 3, "uds_path": uds}))
        .expect(409, "before the VM starts");
}

#[test]
fn the_power_button_reaches_a_running_guest_which_powers_off() {
    let dir = Scratch::new("api", "power-button");
    let kernel = dir.file("k", &power_button_guest());
    let mut vmm = Vmm::spawn(&dir, &["--memory", "32"]);
    let mut api = vmm.client();
    let press = json!({"action_type": "PressPowerButton"});
    api.put("/actions", press.clone())
        .expect(409, "The VM is not running (state \"Not started\")");
    api.patch("/machine-config", json!({"pvm_guest_kernel": pvm()}))
        .expect(204, "");
    api.put("/boot-source", json!({"kernel_image_path": kernel}))
        .expect(204, "");
    api.put("/actions", json!({"action_type": "InstanceStart"}))
        .expect(204, "");
    assert_eq!(vmm.guest_output(2), "up");
    api.patch("/vm", json!({"state": "Paused"})).expect(204, "");
    api.put("/actions", press.clone()).expect(409, "paused");
    api.patch("/vm", json!({"state": "Resumed"})).expect(204, "");
    // The guest keeps polling until the press.
    std::thread::sleep(Duration::from_millis(200));
    assert!(vmm.child.try_wait().unwrap().is_none(), "{}", vmm.stderr());
    api.put("/actions", json!({"action_type": "SendCtrlAltDel"}))
        .expect(400, "PressPowerButton");
    api.put("/actions", press).expect(204, "");
    let status = vmm.wait();
    assert_eq!(status.code(), Some(0), "{}", vmm.stderr());
    assert_eq!(vmm.guest_output(3), "bye");
    assert!(vmm.stderr().contains("vessel-vmm: guest powered off"));
}

#[test]
fn booted_from_the_command_line_the_api_serves_the_running_vm() {
    let dir = Scratch::new("api", "boot-at-once");
    let kernel = dir.file("k", &spinner());
    let mut args = vec!["--kernel", kernel.to_str().unwrap(), "--memory", "32"];
    if pvm() {
        args.push("--pvm-guest-kernel");
    }
    let mut vmm = Vmm::spawn(&dir, &args);
    assert_eq!(vmm.guest_output(2), "up");
    let mut api = vmm.client();
    assert_eq!(api.state(), "Running");
    assert_eq!(
        api.get("/machine-config").expect(200, "").json(),
        json!({"vcpu_count": 1, "mem_size_mib": 32, "pvm_guest_kernel": pvm()})
    );
    api.put("/actions", json!({"action_type": "InstanceStart"}))
        .expect(409, "already started");
    api.put("/machine-config", json!({"vcpu_count": 1, "mem_size_mib": 64}))
        .expect(409, "");
    api.put("/actions", json!({"action_type": "SendCtrlAltDel"}))
        .expect(400, "not supported: the VM has no i8042 keyboard");

    api.patch("/vm", json!({"state": "Paused"})).expect(204, "");
    assert_eq!(api.state(), "Paused");
    api.patch("/vm", json!({"state": "Resumed"})).expect(204, "");
    assert_eq!(api.state(), "Running");
    api.patch("/vm", json!({"state": "Resumed"})).expect(204, "");
    let metrics = api.get("/metrics").expect(200, "").json();
    assert_eq!(
        (&metrics["pause_count"], &metrics["resume_count"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(metrics["api_requests"], json!(11));
    assert_eq!(metrics["api_errors"], json!(3));

    let mode = std::fs::metadata(dir.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only socket");
    vmm.signal(libc::SIGTERM);
    let status = vmm.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    assert!(!dir.socket().exists(), "SIGTERM removes the socket");
}

#[test]
fn bad_requests_get_4xx_naming_the_problem_and_a_failed_start_can_be_retried() {
    let dir = Scratch::new("api", "bad");
    let garbage = dir.file("garbage", &[0x42; 4096]);
    let kernel = dir.file("k", &spinner());
    let mut vmm = Vmm::spawn(&dir, &["--memory", "32"]);
    let mut api = vmm.client();

    // Bodies: unknown fields, wrong types, invalid values.
    api.put(
        "/machine-config",
        json!({"vcpu_count": 1, "mem_size_mib": 32, "vcpus": 2}),
    )
    .expect(400, "unknown field `vcpus`");
    api.put("/boot-source", json!({"kernel": kernel}))
        .expect(400, "unknown field `kernel`");
    api.put(
        "/machine-config",
        json!({"vcpu_count": "two", "mem_size_mib": 32}),
    )
    .expect(400, "invalid type");
    api.put("/machine-config", json!({"vcpu_count": 0, "mem_size_mib": 32}))
        .expect(400, "1 to 254 vCPUs");
    api.put("/machine-config", json!({"vcpu_count": 1}))
        .expect(400, "missing field `mem_size_mib`");
    api.patch("/machine-config", json!({"mem_size_mib": 8}))
        .expect(400, "too small");
    api.request("PUT", "/boot-source", None)
        .expect(400, "needs a JSON body");
    api.send(b"PUT /boot-source HTTP/1.1\r\nContent-Length: 8\r\n\r\nnot json");
    api.reply().expect(400, "Invalid request body");
    api.put("/boot-source", json!({"kernel_image_path": "/nonexistent/k"}))
        .expect(400, "does not exist");
    let drive = |id: &str, path: &Path| json!({"drive_id": id, "path_on_host": path, "is_read_only": true});
    api.put("/drives/a", drive("b", &kernel)).expect(400, "differs");
    api.put("/drives/a.b", drive("a.b", &kernel))
        .expect(400, "Invalid drive_id");
    api.put("/drives/d", drive("d", Path::new("/nonexistent.img")))
        .expect(400, "does not exist");
    api.put("/actions", json!({"action_type": "Reboot"}))
        .expect(400, "unknown variant `Reboot`");
    api.patch("/vm", json!({"state": "Running"}))
        .expect(400, "unknown variant `Running`");
    api.put("/actions", json!({"action_type": "SendCtrlAltDel"}))
        .expect(400, "not supported: the VM has no i8042 keyboard");
    let nic =
        |id: &str, tap: &str, mac: &str| json!({"iface_id": id, "host_dev_name": tap, "guest_mac": mac});
    api.put("/network-interfaces/eth0", nic("eth0", "t0", "ff:ff:ff:ff:ff:ff"))
        .expect(400, "Invalid MAC address");
    api.put("/network-interfaces/eth0", nic("eth0", "", "52:54:00:00:00:01"))
        .expect(400, "not a valid interface name");
    api.put("/network-interfaces/eth0", nic("eth1", "t0", "52:54:00:00:00:01"))
        .expect(400, "differs");
    api.put(
        "/network-interfaces/eth0",
        json!({"iface_id": "eth0", "host_dev_name": "t0", "mac": "52:54:00:00:00:01"}),
    )
    .expect(400, "unknown field `mac`");
    api.put("/vsock", json!({"guest_cid": 2, "uds_path": "/tmp/v.sock"}))
        .expect(400, "guest CID 2 is reserved");
    api.put("/vsock", json!({"guest_cid": 3, "uds_path": ""}))
        .expect(400, "empty");
    assert_eq!(api.get("/vm/config").expect(200, "").json()["nics"], json!([]));

    // Paths and methods.
    api.get("/nope").expect(404, "No resource at /nope");
    api.get("/drives/").expect(404, "");
    let reply = api.request("DELETE", "/", None);
    assert_eq!((reply.status, reply.header("allow")), (405, Some("GET")));
    let reply = api.request("POST", "/actions", None);
    assert_eq!((reply.status, reply.header("allow")), (405, Some("PUT")));
    let reply = api.get("/network-interfaces/eth0");
    assert_eq!((reply.status, reply.header("allow")), (405, Some("PUT")));
    let reply = api.get("/vsock");
    assert_eq!((reply.status, reply.header("allow")), (405, Some("PUT")));
    api.get("/boot-source")
        .expect(405, "GET is not allowed on /boot-source");

    // State: nothing to pause, nothing to start; a failed build leaves the VM unstarted.
    api.patch("/vm", json!({"state": "Paused"}))
        .expect(409, "not running");
    api.put("/actions", json!({"action_type": "InstanceStart"}))
        .expect(400, "No boot source");
    api.patch("/machine-config", json!({"pvm_guest_kernel": pvm()}))
        .expect(204, "");
    api.put("/boot-source", json!({"kernel_image_path": garbage}))
        .expect(204, "");
    api.put("/actions", json!({"action_type": "InstanceStart"}))
        .expect(400, "is not a kernel");
    assert_eq!(api.state(), "Not started");
    api.patch("/machine-config", json!({"mem_size_mib": 100_000_000}))
        .expect(204, "");
    api.put("/boot-source", json!({"kernel_image_path": kernel}))
        .expect(204, "");
    api.put("/actions", json!({"action_type": "InstanceStart"}))
        .expect(400, "exceeds this host");
    api.patch("/machine-config", json!({"mem_size_mib": 32}))
        .expect(204, "");
    api.put("/actions", json!({"action_type": "InstanceStart"}))
        .expect(204, "");
    assert_eq!(vmm.guest_output(2), "up");
    assert_eq!(api.state(), "Running");
}

#[test]
fn http_framing_limits_and_misbehaving_clients() {
    let dir = Scratch::new("api", "http");
    let vmm = Vmm::spawn(&dir, &[]);

    // Errors the parser cannot recover from: answered, then the connection closes.
    let cases: [(&[u8], u16, &str); 5] = [
        (b"GARBAGE\r\n\r\n", 400, "Malformed HTTP request"),
        (
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            400,
            "Invalid Content-Length",
        ),
        (
            b"PUT /boot-source HTTP/1.1\r\nContent-Length: 70000\r\n\r\n",
            413,
            "exceeds 65536",
        ),
        (
            b"PUT /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
            "Content-Length",
        ),
        (b"GET /\x01 HTTP/1.1\r\n\r\n", 400, "Malformed"),
    ];
    for (request, status, needle) in cases {
        let mut client = vmm.client();
        client.send(request);
        client.reply().expect(status, needle);
        assert!(client.closed(), "{:?}", String::from_utf8_lossy(request));
    }
    let mut big_head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    big_head.resize(20_000, b'a');
    let mut client = vmm.client();
    client.send(&big_head);
    client.reply().expect(400, "Request head exceeds 16384 bytes");
    assert!(client.closed());

    // Clients that leave mid-request, and one that says nothing, hurt nobody.
    for partial in [
        &b"GET / HT"[..],
        b"PUT /boot-source HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"ker",
    ] {
        let mut client = vmm.client();
        client.send(partial);
    }
    let silent = vmm.client();
    let mut api = vmm.client();
    assert_eq!(api.state(), "Not started");

    // Pipelined requests are answered in order; HEAD gets a head without a body.
    api.send(b"GET /machine-config HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert_eq!(api.reply().expect(200, "").json()["vcpu_count"], json!(1));
    let head = api.reply_to_head();
    assert_eq!((head.status, head.body.as_str()), (405, ""));
    assert_eq!(api.reply().json()["state"], json!("Not started"));

    // Expect: 100-continue.
    let body = br#"{"vcpu_count": 1, "mem_size_mib": 64}"#;
    api.send(
        format!(
            "PUT /machine-config HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(api.reply().status, 100);
    api.send(body);
    api.reply().expect(204, "");

    // Connection: close, and HTTP/1.0 without keep-alive, end the connection after the reply.
    for request in [
        &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        let mut client = vmm.client();
        client.send(request);
        let reply = client.reply();
        assert_eq!((reply.status, reply.header("connection")), (200, Some("close")));
        assert!(client.closed());
    }

    // Connections beyond the limit get 503; closing some makes room again.
    drop((api, silent));
    let mut open: Vec<Client> = (0..32).map(|_| vmm.client()).collect();
    open[0].get("/").expect(200, "");
    let mut extra = vmm.client();
    extra.reply().expect(503, "Too many open API connections");
    assert!(extra.closed());
    open.truncate(30);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(vmm.client().state(), "Not started");
}

#[test]
fn socket_files_stale_live_and_foreign() {
    let dir = Scratch::new("api", "socket");
    // A socket file nobody listens on is replaced.
    drop(UnixListener::bind(dir.socket()).unwrap());
    let mut vmm = Vmm::spawn(&dir, &[]);
    assert_eq!(vmm.client().state(), "Not started");
    // A live one is not touched, nor is a file that is not a socket.
    let mut second = Vmm::spawn_only(&dir.socket(), &[]);
    assert_eq!(second.wait().code(), Some(1));
    let err = second.stderr();
    assert!(
        err.contains("is in use by another process") && err.lines().count() == 1,
        "{err}"
    );
    let regular = dir.file("regular", b"keep me");
    let mut third = Vmm::spawn_only(&regular, &[]);
    assert_eq!(third.wait().code(), Some(1));
    assert!(third.stderr().contains("is not a socket"));
    assert_eq!(std::fs::read(&regular).unwrap(), b"keep me");
    // SIGKILL leaves the socket file behind: the next VMM replaces it.
    vmm.child.kill().unwrap();
    vmm.wait();
    assert!(dir.socket().exists());
    let next = Vmm::spawn(&dir, &[]);
    assert_eq!(next.client().state(), "Not started");
    drop(next);

    // A VM that cannot boot from the command line fails as without the API, socket removed.
    let mut failed = Vmm::spawn_only(&dir.0.join("boot.sock"), &["--kernel", "/nonexistent/k"]);
    assert_eq!(failed.wait().code(), Some(1));
    let err = failed.stderr();
    assert!(
        err.contains("does not exist") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!dir.0.join("boot.sock").exists());
}

/// The request body the document gives as an example for `operation`, if it takes one.
fn example_body(operation: &Value) -> Option<Value> {
    let body = operation.get("requestBody")?;
    Some(body["content"]["application/json"]["example"].clone())
}

/// A `$ref` to a component schema, resolved.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

#[test]
fn openapi_document_matches_the_server() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("api/openapi.json is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let dir = Scratch::new("api", "openapi");
    let vmm = Vmm::spawn(&dir, &["--memory", "32"]);
    let mut api = vmm.client();
    const METHODS: [&str; 7] = ["get", "put", "patch", "post", "delete", "head", "options"];
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        // The examples' own ids, so that the path and the body agree.
        let concrete = path.replace("{drive_id}", "rootfs").replace("{iface_id}", "eth0");
        let documented: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| METHODS.contains(&k.as_str()))
            .map(|k| k.to_uppercase())
            .collect();
        assert!(!documented.is_empty(), "{path}");
        for method in &documented {
            let operation = &item[method.to_lowercase()];
            let body = example_body(operation);
            let reply = api.request(method, &concrete, body.as_ref());
            let what = format!("{method} {path}: {reply:?}");
            assert!(reply.status != 404 && reply.status != 405, "{what}");
            assert!(
                operation["responses"].get(reply.status.to_string()).is_some()
                    || operation["responses"].get("default").is_some(),
                "{what}: undocumented status"
            );
            if reply.status == 200 {
                // The answer has exactly the documented fields.
                let schema = &operation["responses"]["200"]["content"]["application/json"]["schema"];
                let schema = resolve(&doc, schema);
                let documented: BTreeSet<&String> =
                    schema["properties"].as_object().unwrap().keys().collect();
                let answer = reply.json();
                let answered: BTreeSet<&String> = answer.as_object().unwrap().keys().collect();
                assert_eq!(answered, documented, "{what}");
            }
            if let Some(example) = body {
                // The example is well-formed for the server: any 400 is about its values.
                if reply.status == 400 {
                    for shape in [
                        "unknown field",
                        "missing field",
                        "invalid type",
                        "unknown variant",
                    ] {
                        assert!(!reply.fault().contains(shape), "{what}: example rejected");
                    }
                }
                let schema = resolve(
                    &doc,
                    &operation["requestBody"]["content"]["application/json"]["schema"],
                );
                assert_eq!(schema["additionalProperties"], json!(false), "{method} {path}");
                let mut extra = example;
                extra["not_in_the_schema"] = json!(1);
                api.request(method, &concrete, Some(&extra))
                    .expect(400, "unknown field `not_in_the_schema`");
            }
            checked += 1;
        }
        // And the server takes no method the document leaves out.
        let reply = api.request("DELETE", &concrete, None);
        assert_eq!(reply.status, 405, "DELETE {path}");
        let allowed: BTreeSet<String> = reply
            .header("allow")
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        assert_eq!(allowed, documented, "{path}");
    }
    assert_eq!(checked, 13, "every documented operation was tried");
}

/// Prints bytes counting up by one on COM1, forever (see tests/native_guest.rs).
const SERIAL_COUNTER: [u8; 15] = [
    0x31, 0xdb, 0xba, 0xf8, 0x03, 0x00, 0x00, 0xff, 0xc3, 0x88, 0xd8, 0xee, 0xeb, 0xf9, 0x90,
];

#[test]
fn snapshot_through_the_api_and_restore_behind_a_new_api() {
    let dir = Scratch::new("api", "snapshot");
    let kernel = dir.file("counter.elf", &elf_kernel(&SERIAL_COUNTER));
    let log = dir.0.join("before.log");
    let mut args = vec![
        "--kernel",
        kernel.to_str().unwrap(),
        "--no-rng",
        "--memory",
        "64",
        "--cpus",
        "2",
    ];
    let serial = format!("file:{}", log.display());
    args.extend(["--serial", &serial]);
    if pvm() {
        args.push("--pvm-guest-kernel");
    }
    let vmm = Vmm::spawn(&dir, &args);
    let mut client = vmm.client();
    while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    client.patch("/vm", json!({"state": "Paused"})).expect(204, "");
    let snapshot = dir.0.join("vm.snap");
    client
        .put("/snapshot/create", json!({"snapshot_path": snapshot}))
        .expect(204, "");
    assert_eq!(
        client.state(),
        "Paused",
        "a paused VM stays paused after a snapshot"
    );
    client
        .put(
            "/snapshot/create",
            json!({"snapshot_path": snapshot, "compress": true}),
        )
        .expect(400, "compress");
    let last = *std::fs::read(&log).unwrap().last().unwrap();
    drop(vmm);

    let mut restored = Vmm::restore(&dir, &snapshot);
    let mut client = restored.client();
    assert_eq!(client.state(), "Running");
    let mut resumed = [0u8; 200];
    restored
        .child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut resumed)
        .unwrap();
    let tail = std::fs::read(&log).unwrap();
    assert_eq!(
        resumed[0],
        last.wrapping_add(1),
        "the restored guest continues the saved count (log tail {:?}, resumed {:?})",
        &tail[tail.len().saturating_sub(8)..],
        &resumed[..8]
    );
    client.patch("/vm", json!({"state": "Paused"})).expect(204, "");
    assert_eq!(client.state(), "Paused");
}

#[test]
fn a_power_button_press_the_guest_has_not_read_survives_a_snapshot() {
    let dir = Scratch::new("api", "ged-snapshot");
    let kernel = dir.file("k", &ged_reporting_guest());
    let mut args = vec!["--kernel", kernel.to_str().unwrap(), "--memory", "32", "--no-rng"];
    if pvm() {
        args.push("--pvm-guest-kernel");
    }
    let mut vmm = Vmm::spawn(&dir, &args);
    assert_eq!(vmm.guest_output(2), "up");
    let mut api = vmm.client();
    // The guest polls COM1, not the event device: the press stays pending.
    api.put("/actions", json!({"action_type": "PressPowerButton"}))
        .expect(204, "");
    let snapshot = dir.0.join("vm.snap");
    api.put("/snapshot/create", json!({"snapshot_path": snapshot}))
        .expect(204, "");
    drop(vmm);

    let mut restored = Vmm::restore(&dir, &snapshot);
    restored.type_to_guest(b"x");
    let status = restored.wait();
    assert_eq!(status.code(), Some(0), "{}", restored.stderr());
    assert_eq!(
        restored.guest_output(1),
        "\u{1}",
        "the restored guest reads the power-button bit"
    );
}
