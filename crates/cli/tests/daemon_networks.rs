//! Networks end to end, inside network namespaces the tests make: vesseld runs in one (its "host"), and an
//! "outside host" namespace joined to it by a veth stands for the internet. Nothing else is ever addressed.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use support::{Daemon, IMAGE};
use vessel_net::netns::NetNs;
use vessel_net::{link, netlink::Netlink, veth};

const HOST_OUT: &str = "198.51.100.1";
const OUTSIDE: &str = "198.51.100.2";

/// The "outside host": a namespace with 198.51.100.2, linked to vesseld's namespace (198.51.100.1), with an
/// HTTP server on port 7000 that answers with the address it sees the client at.
struct Outside {
    ns: NetNs,
}

impl Outside {
    fn new(d: &Daemon) -> Outside {
        let ns = NetNs::create(&d.base.join("outside.netns")).unwrap();
        d.on_host(|| {
            let mut nl = Netlink::open().unwrap();
            link::add_veth(&mut nl, "vt-out", "eth0", ns.as_fd(), 1500).unwrap();
            let i = link::index("vt-out").unwrap();
            link::add_address(&mut nl, i, HOST_OUT.parse().unwrap(), 24).unwrap();
            link::set(
                &mut nl,
                i,
                link::LinkChange {
                    up: true,
                    ..Default::default()
                },
            )
            .unwrap();
        });
        ns.enter(|| {
            veth::configure_inside(&veth::Endpoint {
                ifname: "eth0".into(),
                host_ifname: String::new(),
                mac: [2, 0, 0, 0, 0, 0x51],
                mtu: 1500,
                addresses: vec![(OUTSIDE.parse().unwrap(), 24)],
                gateways: vec![HOST_OUT.parse().unwrap()],
                rate: None,
            })
        })
        .unwrap();
        let listener = ns
            .enter(|| Ok(TcpListener::bind((OUTSIDE, 7000)).unwrap()))
            .unwrap();
        std::thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                let peer = c.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = write!(
                    c,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nseen-from {peer}\n"
                );
            }
        });
        Outside { ns }
    }

    fn get(&self, addr: &str, port: u16) -> Result<String, String> {
        self.ns.enter(|| Ok(http_get(addr, port))).unwrap()
    }
}

/// GET / over TCP; the body, or why not.
fn http_get(addr: &str, port: u16) -> Result<String, String> {
    let ip: IpAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}:{port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /index.html HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

/// A web server instance: busybox httpd on port 80 serving `body`.
fn web(d: &Daemon, name: &str, extra: &[&str], body: &str) {
    let script = format!("echo {body} > /tmp/index.html && exec httpd -f -p 80 -h /tmp");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", &script]);
    d.ok(&args);
    let listening = || {
        d.vessel(&["exec", name, "sh", "-c", "netstat -ltn | grep -q :80"])
            .status
            .success()
    };
    for _ in 0..100 {
        if listening() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let netstat = d.vessel(&["exec", name, "netstat", "-ltn"]);
    panic!(
        "{name} does not listen on port 80: logs {:?}, netstat {:?} {:?}, state {}",
        d.vessel(&["logs", name]),
        String::from_utf8_lossy(&netstat.stdout),
        String::from_utf8_lossy(&netstat.stderr),
        d.status(name)
    );
}

/// An HTTP GET from inside an instance (busybox nc; Debian's static busybox wget crashes): the body, or
/// the error.
fn fetch(d: &Daemon, from: &str, host: &str, port: u16) -> Result<String, String> {
    let script = format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}");
    let out = d.vessel(&["exec", from, "sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if out.status.success() && head.contains(" 200 ") => Ok(body.to_string()),
        _ => Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

fn ip_of(d: &Daemon, name: &str, network: &str, key: &str) -> String {
    let inst = d.inspect(name);
    let att = inst["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["network"] == network)
        .unwrap_or_else(|| panic!("{name} is not on {network}: {inst}"));
    att[key].as_str().unwrap().split('/').next().unwrap().to_string()
}

#[test]
fn egress_and_forwards_from_outside_localhost_and_hairpin_under_foreign_drop_policies() {
    let d = Daemon::start("net-fwd");
    let outside = Outside::new(&d);
    // What Docker leaves behind (a FORWARD policy of drop) and a firewalld-style table rejecting at input
    // and forward: vessel's traffic must still pass.
    d.on_host(|| {
        vessel_net::nft::run(&serde_json::json!({ "nftables": [
            { "add": { "table": { "family": "ip", "name": "filter" } } },
            { "add": { "chain": { "family": "ip", "table": "filter", "name": "FORWARD", "type": "filter",
                "hook": "forward", "prio": 0, "policy": "drop" } } },
            { "add": { "table": { "family": "inet", "name": "firewalld" } } },
            { "add": { "chain": { "family": "inet", "table": "firewalld", "name": "filter_INPUT", "type": "filter",
                "hook": "input", "prio": 10, "policy": "accept" } } },
            { "add": { "rule": { "family": "inet", "table": "firewalld", "chain": "filter_INPUT",
                "expr": [ { "match": { "op": "==", "left": { "meta": { "key": "l4proto" } }, "right": "udp" } },
                          { "match": { "op": "==", "left": { "payload": { "protocol": "th", "field": "dport" } }, "right": 53 } },
                          { "reject": null } ] } } },
        ] }))
        .unwrap();
    });
    web(&d, "web", &["-p", "8080:80"], "hello-web");
    web(&d, "other", &[], "hello-other");

    // Egress: masqueraded behind the host's outside address.
    let body = fetch(&d, "web", OUTSIDE, 7000).expect("egress from an instance");
    assert_eq!(body.trim(), format!("seen-from {HOST_OUT}"));
    // A forward from outside, from the host (its outside address and localhost), and hairpin from the
    // instance itself and from another on its network.
    assert_eq!(outside.get(HOST_OUT, 8080).unwrap().trim(), "hello-web");
    assert_eq!(
        d.on_host(|| http_get(HOST_OUT, 8080)).unwrap().trim(),
        "hello-web"
    );
    assert_eq!(
        d.on_host(|| http_get("127.0.0.1", 8080)).unwrap().trim(),
        "hello-web"
    );
    assert_eq!(fetch(&d, "web", HOST_OUT, 8080).unwrap().trim(), "hello-web");
    assert_eq!(fetch(&d, "other", HOST_OUT, 8080).unwrap().trim(), "hello-web");
    // Nothing else of an instance is reachable from outside, forward or not.
    let other_ip = ip_of(&d, "other", "vessel0", "ip");
    assert!(
        outside.get(&other_ip, 80).is_err(),
        "an unpublished instance was reached from outside"
    );
    // The name of an instance resolves through the network's resolver (port 53 despite firewalld's rule).
    assert_eq!(fetch(&d, "web", "other", 80).unwrap().trim(), "hello-other");

    let ports = d.ok(&["port", "web"]);
    assert_eq!(ports.trim(), "80/tcp -> 0.0.0.0:8080");
    d.ok(&["rm", "-f", "web", "other"]);
    // The foreign chains lost only vessel's rules.
    let ruleset = d.on_host(|| vessel_net::nft::list_ruleset().unwrap().to_string());
    assert!(
        ruleset.contains("\"FORWARD\"") && ruleset.contains("firewalld"),
        "{ruleset}"
    );
    assert!(
        !ruleset.contains("{\"dnat\":"),
        "a forward outlived its instance: {ruleset}"
    );
    d.assert_clean_after_rm_all();
}

#[test]
fn names_isolation_internal_networks_ipv6_and_dns_forwarding() {
    let d = Daemon::start_with("net-iso", &["--dns-upstream", "198.51.100.2:53"]);
    let outside = Outside::new(&d);
    // A resolver in the outside namespace that owns one name the networks do not.
    let upstream_ns = &outside.ns;
    let (tx, rx) = std::sync::mpsc::channel();
    let ns_file = std::fs::File::open(&upstream_ns.path).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns_file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut zone = vessel_daemon::dns::Zone::new();
            zone.insert("far.example", "203.0.113.7".parse().unwrap());
            let zone = std::sync::Arc::new(std::sync::RwLock::new(zone));
            let _server = vessel_daemon::dns::DnsServer::start(&[OUTSIDE.parse().unwrap()], 53, zone, vec![])
                .await
                .unwrap();
            tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap();

    d.ok(&["network", "create", "--ipv6", "alpha"]);
    d.ok(&["network", "create", "beta"]);
    d.ok(&["network", "create", "--internal", "vault"]);
    web(
        &d,
        "a1",
        &["--network", "alpha", "--network-alias", "www"],
        "from-a1",
    );
    web(&d, "a2", &["--network", "alpha"], "from-a2");
    web(&d, "b1", &["--network", "beta"], "from-b1");
    web(&d, "v1", &["--network", "vault"], "from-v1");
    web(&d, "v2", &["--network", "vault"], "from-v2");

    // By name (and alias) both ways on one network, IPv4 and IPv6.
    assert_eq!(fetch(&d, "a2", "a1", 80).unwrap().trim(), "from-a1");
    assert_eq!(fetch(&d, "a2", "www", 80).unwrap().trim(), "from-a1");
    assert_eq!(fetch(&d, "a1", "a2", 80).unwrap().trim(), "from-a2");
    let a1_v6 = ip_of(&d, "a1", "alpha", "ip6");
    assert_eq!(fetch(&d, "a2", &a1_v6, 80).unwrap().trim(), "from-a1");
    let lookup = d.ok(&["exec", "a2", "nslookup", "-type=AAAA", "a1"]);
    assert!(lookup.contains(&a1_v6), "AAAA of a1: {lookup}");
    // Another network: neither its names nor its addresses are reachable.
    let a1_ip = ip_of(&d, "a1", "alpha", "ip");
    assert!(fetch(&d, "b1", &a1_ip, 80).is_err(), "beta reached alpha");
    assert!(fetch(&d, "b1", "a1", 80).is_err(), "beta resolved alpha's name");
    // Internal: its members reach each other, nothing else.
    assert_eq!(fetch(&d, "v1", "v2", 80).unwrap().trim(), "from-v2");
    assert!(
        fetch(&d, "v1", OUTSIDE, 7000).is_err(),
        "an internal network had egress"
    );
    // A name no network owns goes to the upstream resolver.
    let far = d.ok(&["exec", "a1", "nslookup", "far.example"]);
    assert!(far.contains("203.0.113.7"), "forwarded lookup: {far}");

    // connect / disconnect of a running instance.
    d.ok(&["network", "connect", "beta", "a1"]);
    assert_eq!(fetch(&d, "b1", "a1", 80).unwrap().trim(), "from-a1");
    let links = d.ok(&["exec", "a1", "ip", "-o", "link"]);
    assert!(links.contains("eth1"), "{links}");
    d.ok(&["network", "disconnect", "beta", "a1"]);
    let links = d.ok(&["exec", "a1", "ip", "-o", "link"]);
    assert!(!links.contains("eth1"), "{links}");
    assert!(fetch(&d, "b1", &a1_ip, 80).is_err());

    // In use: refused, and nothing changes.
    let err = d.fails(&["network", "rm", "alpha"]);
    assert!(err.contains("in use"), "{err}");
    d.ok(&["rm", "-f", "a1", "a2", "b1", "v1", "v2"]);
    for n in ["alpha", "beta", "vault"] {
        d.ok(&["network", "rm", n]);
    }
    d.assert_clean_after_rm_all();
}

#[test]
fn bad_network_input_is_one_line_and_changes_nothing() {
    let d = Daemon::start("net-bad");
    d.ok(&["network", "create", "--subnet", "10.30.0.0/24", "one"]);
    let before_nets = d.ok(&["network", "ls", "--format", "json"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["network", "create", "--subnet", "10.30.0.0/16", "two"],
            "overlaps",
        ),
        (
            &["network", "create", "--subnet", "10.31.0.5/24", "two"],
            "not a network address",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.31.0.0/24",
                "--gateway",
                "10.32.0.1",
                "two",
            ],
            "not in subnet",
        ),
        (
            &["network", "create", "--driver", "overlay", "two"],
            "Unknown network driver",
        ),
        (&["network", "create", "one"], "exists already"),
        (
            &[
                "run",
                "-d",
                "--network",
                "one",
                "--ip",
                "10.99.0.5",
                IMAGE,
                "sleep",
                "60",
            ],
            "not in subnet",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "one",
                "--ip",
                "10.30.0.1",
                IMAGE,
                "sleep",
                "60",
            ],
            "gateway",
        ),
        (
            &["run", "-d", "--network", "nosuch", IMAGE, "sleep", "60"],
            "No such network",
        ),
        (
            &["run", "-d", "-p", "9000-9002:80-81", IMAGE, "sleep", "60"],
            "differ in length",
        ),
        (
            &["run", "-d", "-p", "70000:80", IMAGE, "sleep", "60"],
            "not a port",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "none",
                "-p",
                "80:80",
                IMAGE,
                "sleep",
                "60",
            ],
            "none",
        ),
    ];
    for (args, want) in cases {
        let err = d.fails(args);
        assert!(err.contains(want), "vessel {args:?}: {err}");
    }
    // A port forwarded already, and a port something on the host listens on.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "first",
        "--network",
        "one",
        "--ip",
        "10.30.0.9",
        "-p",
        "9000:80",
        IMAGE,
        "sleep",
        "60",
    ]);
    let err = d.fails(&["run", "-d", "-p", "9000:81", IMAGE, "sleep", "60"]);
    assert!(err.contains("already forwarded"), "{err}");
    let err = d.fails(&[
        "run",
        "-d",
        "--network",
        "one",
        "--ip",
        "10.30.0.9",
        IMAGE,
        "sleep",
        "60",
    ]);
    assert!(err.contains("in use"), "{err}");
    let _listener = d.on_host(|| TcpListener::bind(("0.0.0.0", 9100)).unwrap());
    let err = d.fails(&["run", "-d", "-p", "9100:80", IMAGE, "sleep", "60"]);
    assert!(err.contains("in use on the host"), "{err}");
    assert_eq!(
        d.ok(&["ps", "-a", "-q"]).lines().count(),
        1,
        "a refused run left an instance"
    );
    assert_eq!(
        d.ok(&["network", "ls", "--format", "json"])
            .matches("\"name\"")
            .count(),
        before_nets.matches("\"name\"").count() + 1
    );
    d.ok(&["rm", "-f", "first"]);
    d.assert_clean_after_rm_all();
}

/// bits per second of `bytes` over `secs`.
fn rate(bytes: usize, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs
}

#[test]
fn net_rate_limits_each_direction_to_within_ten_percent() {
    let d = Daemon::start("net-rate");
    const LIMIT: f64 = 20e6;
    const BYTES: usize = 6 << 20;
    d.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--net-rate",
        "20m",
        IMAGE,
        "sh",
        "-c",
        // Reads everything, then says so on the same connection (a receiver's own end, not our buffers').
        "nc -l -p 5001 -e sh -c 'head -c 6291456 > /dev/null; echo done'; exec sleep 3600",
    ]);
    d.until(10, "slow listens", || {
        d.vessel(&["exec", "slow", "sh", "-c", "netstat -ltn | grep -q :5001"])
            .status
            .success()
    });
    let ip = ip_of(&d, "slow", "vessel0", "ip");
    let gateway = d.inspect("slow")["networks"][0]["gateway"]
        .as_str()
        .unwrap()
        .to_string();
    // Into the instance: the host writes; the instance answers once it has read everything.
    let secs_in = d.on_host(|| {
        let mut s = TcpStream::connect((ip.as_str(), 5001)).unwrap();
        let start = std::time::Instant::now();
        s.write_all(&vec![0u8; BYTES]).unwrap();
        let mut done = [0u8; 4];
        s.read_exact(&mut done).unwrap();
        assert_eq!(&done, b"done");
        start.elapsed().as_secs_f64()
    });
    // Out of it: the instance sends, the host times from the first byte to the end.
    let listener = d.on_host(|| TcpListener::bind((gateway.as_str(), 6001)).unwrap());
    let receiver = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        let mut start = None;
        loop {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            start.get_or_insert_with(std::time::Instant::now);
            total += n;
        }
        (total, start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0))
    });
    let send = format!(
        "dd if=/dev/zero bs=65536 count={} 2>/dev/null | nc {gateway} 6001",
        BYTES / 65536
    );
    d.ok(&["exec", "slow", "sh", "-c", &send]);
    let (got, secs_out) = receiver.join().unwrap();
    assert_eq!(got, BYTES);
    for (dir, measured) in [("in", rate(BYTES, secs_in)), ("out", rate(BYTES, secs_out))] {
        let ratio = measured / LIMIT;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{dir}: {measured:.0} bit/s against a limit of {LIMIT} ({ratio:.3})"
        );
    }
    d.ok(&["rm", "-f", "slow"]);
    d.assert_clean_after_rm_all();
}

#[test]
fn kill_9_while_attaching_and_detaching_never_gives_an_address_twice_nor_leaks() {
    let mut d = Daemon::start("net-chaos");
    d.ok(&["network", "create", "--subnet", "10.50.0.0/24", "side"]);
    d.ok(&["run", "-d", "--name", "x", IMAGE, "sleep", "3600"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "y",
        "--network",
        "side",
        IMAGE,
        "sleep",
        "3600",
    ]);
    let on_side = |d: &Daemon, name: &str| {
        d.inspect(name)["networks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["network"] == "side")
            .map(|a| a["ip"].as_str().unwrap().to_string())
    };
    for i in 0..200u64 {
        let verb = if i % 2 == 0 { "connect" } else { "disconnect" };
        let mut client = d
            .cmd(&["network", verb, "side", "x"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A spread of moments: before, during and after the plumbing.
        std::thread::sleep(Duration::from_micros((i * 7919) % 40_000));
        d.kill9();
        let _ = client.wait();
        d.spawn();
        if i % 20 == 19 {
            let x = on_side(&d, "x");
            let y = on_side(&d, "y");
            assert!(y.is_some());
            assert_ne!(x, y, "one address given twice");
            let links = d.ok(&["exec", "x", "ip", "-o", "link"]);
            assert_eq!(
                links.contains("eth1"),
                x.is_some(),
                "round {i}: store says {x:?}, instance has {links}"
            );
        }
    }
    // Still in working order: both verbs, and the interface follows.
    if on_side(&d, "x").is_none() {
        d.ok(&["network", "connect", "side", "x"]);
    }
    let x = on_side(&d, "x").unwrap();
    assert_ne!(Some(x.clone()), on_side(&d, "y"));
    d.ok(&["network", "disconnect", "side", "x"]);
    assert!(!d.ok(&["exec", "x", "ip", "-o", "link"]).contains("eth1"));
    d.ok(&["rm", "-f", "x", "y"]);
    d.ok(&["network", "rm", "side"]);
    d.assert_clean_after_rm_all();
}

#[test]
fn many_create_delete_cycles_leave_links_rules_and_addresses_as_they_were() {
    let d = Daemon::start("net-cycles");
    d.ok(&["network", "create", "--ipv6", "churn"]);
    let snapshot = |d: &Daemon| {
        d.on_host(|| {
            let mut nl = Netlink::open().unwrap();
            let mut links = link::names(&mut nl).unwrap();
            links.sort();
            let rules = vessel_net::nft::list_ruleset().unwrap();
            // Handles differ from one rebuild of the table to the next; the rules must not.
            let mut items: Vec<String> = rules["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    for k in ["rule", "chain", "table"] {
                        if let Some(o) = i.get_mut(k).and_then(|v| v.as_object_mut()) {
                            o.remove("handle");
                        }
                    }
                    i.to_string()
                })
                .collect();
            items.sort();
            (links, items)
        })
    };
    let cycles: usize = std::env::var("VESSEL_TEST_NET_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let before = snapshot(&d);
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let d = &d;
            s.spawn(move || {
                for i in (t..cycles).step_by(threads) {
                    let name = format!("c{i}");
                    let port = format!("{}:80", 20000 + i);
                    d.ok(&[
                        "run",
                        "-d",
                        "--name",
                        &name,
                        "--network",
                        "churn",
                        "-p",
                        &port,
                        IMAGE,
                        "sleep",
                        "60",
                    ]);
                    d.ok(&["rm", "-f", &name]);
                }
            });
        }
    });
    let after = snapshot(&d);
    assert_eq!(before.0, after.0, "links differ after {cycles} cycles");
    assert_eq!(before.1, after.1, "nftables rules differ after {cycles} cycles");
    assert_eq!(
        d.inspect_network("churn")["instances"].as_array().unwrap().len(),
        0
    );
    d.assert_clean_after_rm_all();
}
