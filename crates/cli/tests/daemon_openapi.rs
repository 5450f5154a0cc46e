//! The OpenAPI document against the live server: every documented operation is called and answers as
//! documented, and every request body schema refuses an unknown field.

mod support;

use std::collections::BTreeSet;

use support::{Daemon, IMAGE};

#[test]
fn every_documented_operation_answers_and_every_body_refuses_unknown_fields() {
    let d = Daemon::start("openapi");
    let doc = d.json("GET", "/1.0/openapi.json", "");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "o1",
        IMAGE,
        "sh",
        "-c",
        "echo hello; sleep 300",
    ]);
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    // How each operation is called here, and the status it must answer with.
    let calls: &[(&str, &str, &str, u16)] = &[
        ("GET /1.0", "/1.0", "", 200),
        ("GET /1.0/openapi.json", "/1.0/openapi.json", "", 200),
        ("GET /metrics", "/metrics", "", 200),
        ("GET /1.0/instances", "/1.0/instances?all=true", "", 200),
        (
            "POST /1.0/instances",
            "/1.0/instances",
            r#"{"image":"t/busybox","name":"o2","command":["sleep","300"]}"#,
            201,
        ),
        ("GET /1.0/instances/{name}", "/1.0/instances/o1", "", 200),
        (
            "PATCH /1.0/instances/{name}",
            "/1.0/instances/o1",
            r#"{"limits":{"pids":99}}"#,
            200,
        ),
        (
            "PUT /1.0/instances/{name}/state",
            "/1.0/instances/o2/state",
            r#"{"action":"start"}"#,
            200,
        ),
        (
            "POST /1.0/instances/{name}/rename",
            "/1.0/instances/o2/rename",
            r#"{"name":"o3"}"#,
            200,
        ),
        ("GET /1.0/instances/{name}/top", "/1.0/instances/o1/top", "", 200),
        (
            "GET /1.0/instances/{name}/stats",
            "/1.0/instances/o1/stats",
            "",
            200,
        ),
        (
            "GET /1.0/instances/{name}/logs",
            "/1.0/instances/o1/logs?tail=5",
            "",
            200,
        ),
        // Without the Upgrade header these are refused; with it they switch protocols (tested elsewhere).
        (
            "POST /1.0/instances/{name}/attach",
            "/1.0/instances/o1/attach",
            "",
            400,
        ),
        (
            "POST /1.0/instances/{name}/exec",
            "/1.0/instances/o1/exec",
            r#"{"command":["true"]}"#,
            400,
        ),
        (
            "DELETE /1.0/instances/{name}",
            "/1.0/instances/o3?force=true",
            "",
            204,
        ),
        (
            "POST /1.0/instances/{name}/wait",
            "/1.0/instances/o1/wait",
            "",
            200,
        ),
        (
            "POST /1.0/networks",
            "/1.0/networks",
            r#"{"name":"n1","subnet":"10.40.0.0/24","ipv6":true}"#,
            201,
        ),
        ("GET /1.0/networks", "/1.0/networks", "", 200),
        ("GET /1.0/networks/{name}", "/1.0/networks/n1", "", 200),
        (
            "POST /1.0/networks/{name}/connect",
            "/1.0/networks/n1/connect",
            r#"{"instance":"o1","ip":"10.40.0.9"}"#,
            200,
        ),
        (
            "POST /1.0/networks/{name}/disconnect",
            "/1.0/networks/n1/disconnect",
            r#"{"instance":"o1"}"#,
            200,
        ),
        ("DELETE /1.0/networks/{name}", "/1.0/networks/n1", "", 204),
        ("GET /1.0/images", "/1.0/images", "", 200),
        ("GET /1.0/images/{name}", "/1.0/images/t%2Fbusybox", "", 200),
        (
            "POST /1.0/images/{name}/tag",
            "/1.0/images/t%2Fbusybox/tag",
            r#"{"name":"t/copy:1"}"#,
            200,
        ),
        ("DELETE /1.0/images/{name}", "/1.0/images/t%2Fcopy%3A1", "", 204),
        ("POST /1.0/images/prune", "/1.0/images/prune", "", 200),
        // Nothing listens on port 1: the operations start (202) and fail.
        (
            "POST /1.0/images/pull",
            "/1.0/images/pull",
            r#"{"reference":"127.0.0.1:1/t/x:1"}"#,
            202,
        ),
        (
            "POST /1.0/images/{name}/push",
            "/1.0/images/t%2Fbusybox/push",
            r#"{"destination":"127.0.0.1:1/t/x:1"}"#,
            202,
        ),
        ("GET /1.0/operations", "/1.0/operations", "", 200),
        ("GET /1.0/operations/{id}", "/1.0/operations/OP", "", 200),
        (
            "GET /1.0/operations/{id}/wait",
            "/1.0/operations/OP/wait?timeout=30",
            "",
            200,
        ),
        // Ended by now: a cancel is refused (cancelling a running one is in daemon_images.rs).
        ("DELETE /1.0/operations/{id}", "/1.0/operations/OP", "", 409),
    ];
    let called: BTreeSet<String> = calls.iter().map(|c| c.0.to_string()).collect();
    let mut expected = documented.clone();
    expected.remove("GET /1.0/events");
    assert_eq!(
        called, expected,
        "documented operations and the ones this test calls differ"
    );
    let mut op_id = String::new();
    for (op, path, body, status) in calls {
        if op.ends_with("instances/{name}/wait") {
            d.ok(&["stop", "-t", "0", "o1"]);
        }
        let method = op.split(' ').next().unwrap();
        let path = path.replace("OP", &op_id);
        let (got, text) = d.api(method, &path, body);
        assert_eq!(got, *status, "{op}: {text}");
        if *op == "POST /1.0/images/pull" {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            op_id = v["id"].as_str().unwrap().to_string();
        }
        if op.ends_with("operations/{id}/wait") {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["status"], "failure", "{v}");
            assert!(v["error"].as_str().unwrap().contains("127.0.0.1:1"), "{v}");
        }
        let documented_statuses =
            &doc["paths"][op.split_once(' ').unwrap().1][method.to_lowercase()]["responses"];
        assert!(
            documented_statuses.get(status.to_string()).is_some(),
            "{op} answered {status}, which its document does not list"
        );
    }
    // Events stream JSON lines: seen with the CLI's events tests; here, that the route answers.
    let mut events = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    std::io::Write::write_all(&mut events, b"GET /1.0/events HTTP/1.1\r\nHost: v\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut events, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Every request body schema refuses an unknown field.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let bodies: &[(&str, &str, &str, &str)] = &[
        (
            "InstanceConfig",
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","bogus":1}"#,
        ),
        ("InstanceUpdate", "PATCH", "/1.0/instances/o1", r#"{"bogus":1}"#),
        (
            "StateChange",
            "PUT",
            "/1.0/instances/o1/state",
            r#"{"action":"start","bogus":1}"#,
        ),
        (
            "Rename",
            "POST",
            "/1.0/instances/o1/rename",
            r#"{"name":"x","bogus":1}"#,
        ),
        (
            "Limits",
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","limits":{"bogus":1}}"#,
        ),
        (
            "RestartPolicy",
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","restart":{"bogus":1}}"#,
        ),
        (
            "ExecConfig",
            "POST",
            "/1.0/instances/o1/exec",
            r#"{"command":["true"],"bogus":1}"#,
        ),
        (
            "Ulimit",
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","ulimits":[{"name":"nofile","soft":1,"hard":1,"bogus":1}]}"#,
        ),
        (
            "PullRequest",
            "POST",
            "/1.0/images/pull",
            r#"{"reference":"t/busybox","bogus":1}"#,
        ),
        (
            "RegistryAuth",
            "POST",
            "/1.0/images/pull",
            r#"{"reference":"t/busybox","registry":{"bogus":1}}"#,
        ),
        (
            "PushRequest",
            "POST",
            "/1.0/images/t%2Fbusybox/push",
            r#"{"bogus":1}"#,
        ),
        (
            "TagRequest",
            "POST",
            "/1.0/images/t%2Fbusybox/tag",
            r#"{"name":"x","bogus":1}"#,
        ),
        (
            "NetworkConfig",
            "POST",
            "/1.0/networks",
            r#"{"name":"x","bogus":1}"#,
        ),
        (
            "NetworkRequest",
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","networks":[{"network":"vessel0","bogus":1}]}"#,
        ),
        (
            "PortMapping",
            "POST",
            "/1.0/instances",
            r#"{"image":"t/busybox","ports":[{"host_port":1,"port":1,"bogus":1}]}"#,
        ),
        (
            "ConnectRequest",
            "POST",
            "/1.0/networks/vessel0/connect",
            r#"{"instance":"o1","bogus":1}"#,
        ),
        (
            "DisconnectRequest",
            "POST",
            "/1.0/networks/vessel0/disconnect",
            r#"{"instance":"o1","bogus":1}"#,
        ),
    ];
    let mut request_schemas = BTreeSet::new();
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            if let Some(r) = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str() {
                request_schemas.insert(r.rsplit('/').next().unwrap().to_string());
            }
        }
    }
    for name in &request_schemas {
        assert!(
            bodies.iter().any(|b| b.0 == name),
            "request schema {name} has no unknown-field check here"
        );
        assert_eq!(
            schemas[name]["additionalProperties"], false,
            "{name} does not say it refuses unknown fields"
        );
    }
    for (name, method, path, body) in bodies {
        let (got, text) = d.api(method, path, body);
        assert_eq!(got, 400, "{name} accepted an unknown field: {text}");
        assert!(text.contains("unknown field `bogus`"), "{name}: {text}");
    }
    d.assert_clean_after_rm_all();
}
