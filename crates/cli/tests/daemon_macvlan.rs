//! Networks cut from a physical one (`--driver macvlan --parent IFACE [--vlan ID]`) end to end: vesseld
//! runs in a network namespace of its own (its "host"); the parent is a veth there (a kernel may have no
//! dummy links) whose other end is in "outside" namespaces the tests make and address. Nothing else is
//! ever touched. On a kernel without 802.1Q, the VLAN test checks only that `--vlan` is refused cleanly.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Daemon, IMAGE};
use vessel_net::netns::NetNs;

/// `ip ARGS` run in the network namespace kept at `ns`: its output, or `Err` with why not.
fn try_ip(ns: &Path, args: &[&str]) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::open(ns).map_err(|e| format!("{}: {e}", ns.display()))?;
    let fd = file.as_raw_fd();
    let mut cmd = Command::new("ip");
    cmd.args(args);
    // SAFETY: between fork and exec only setns(2), a single async-signal-safe syscall, runs; the fd stays
    // open in the parent for the call.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn ip(ns: &Path, args: &[&str]) -> String {
    try_ip(ns, args).unwrap_or_else(|e| panic!("ip {args:?} in {}: {e}", ns.display()))
}

/// `ip link add link LOWER name NAME type vlan id ID` in `ns`: false when the kernel has no 802.1Q
/// support (CONFIG_VLAN_8021Q unset and no module to load).
fn add_vlan(ns: &Path, lower: &str, name: &str, id: &str) -> bool {
    let args = [
        "link", "add", "link", lower, "name", name, "type", "vlan", "id", id,
    ];
    match try_ip(ns, &args) {
        Ok(_) => true,
        Err(e) if e.contains("Unknown device type") => false,
        Err(e) => panic!("ip {args:?} in {}: {e}", ns.display()),
    }
}

/// vesseld's namespace.
fn host(d: &Daemon) -> &Path {
    &d.netns.as_ref().expect("vesseld's namespace").path
}

/// The names of the links of `kind` (any kind when empty) in the namespace at `ns`.
fn links(ns: &Path, kind: &str) -> Vec<String> {
    let mut args = vec!["-o", "link", "show"];
    if !kind.is_empty() {
        args.extend_from_slice(&["type", kind]);
    }
    let mut names: Vec<String> = ip(ns, &args)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect();
    names.sort();
    names
}

/// A namespace a test made under the daemon's base directory: unmounted and removed when the test ends,
/// passed or failed.
struct Scratch(NetNs);

impl Scratch {
    fn new(d: &Daemon, name: &str) -> Scratch {
        Scratch(NetNs::create(&d.base.join(format!("{name}.netns"))).unwrap())
    }
}

impl std::ops::Deref for Scratch {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = vessel_net::netns::remove(&self.0.path);
    }
}

/// A veth `parent` in vesseld's namespace, up, whose other end is `eth0` of a new namespace `outside`
/// (up, with `addr/prefix` on it when given).
fn veth_parent(d: &Daemon, parent: &str, outside: &str, addr: Option<&str>) -> Scratch {
    let ns = Scratch::new(d, outside);
    let peer_ns = ns.path.display().to_string();
    ip(
        host(d),
        &[
            "link", "add", parent, "type", "veth", "peer", "name", "eth0", "netns", &peer_ns,
        ],
    );
    ip(host(d), &["link", "set", parent, "up"]);
    if let Some(a) = addr {
        ip(&ns.path, &["addr", "add", a, "dev", "eth0"]);
    }
    ip(&ns.path, &["link", "set", "eth0", "up"]);
    ns
}

/// A TCP server on `addr:port` in `ns` that answers every connection with `NAME seen-from PEER`.
fn serve(ns: &NetNs, name: &str, addr: &str, port: u16) {
    let listener = ns.enter(|| Ok(TcpListener::bind((addr, port)).unwrap())).unwrap();
    let name = name.to_string();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let peer = c.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{name} seen-from {peer}\n"
            );
        }
    });
}

/// GET / over TCP from the namespace `ns`: the body, or why not.
fn get_from(ns: &NetNs, addr: &str, port: u16) -> Result<String, String> {
    ns.enter(|| {
        Ok((|| {
            let ip: IpAddr = addr.parse().map_err(|e| format!("{e}"))?;
            let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(3))
                .map_err(|e| format!("connect {addr}:{port}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET /index.html HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
            let mut text = String::new();
            s.read_to_string(&mut text).map_err(|e| e.to_string())?;
            Ok(text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
        })())
    })
    .unwrap()
}

/// A web server instance: busybox httpd on port 80 serving `body`.
fn web(d: &Daemon, name: &str, extra: &[&str], body: &str) {
    let script = format!("echo {body} > /tmp/index.html && exec httpd -f -p 80 -h /tmp");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", &script]);
    d.ok(&args);
    d.until(30, &format!("{name} to listen on port 80"), || {
        d.vessel(&["exec", name, "sh", "-c", "netstat -ltn | grep -q :80"])
            .status
            .success()
    });
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

/// `vessel inspect NAME`'s one attachment, on `network`.
fn attachment(d: &Daemon, name: &str, network: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", name])).unwrap();
    let inst = &all[0];
    let nets = inst["networks"].as_array().unwrap();
    assert_eq!(nets.len(), 1, "{name}: {inst}");
    assert_eq!(nets[0]["network"], network, "{name}: {inst}");
    nets[0].clone()
}

/// The address (no prefix) of an attachment.
fn addr_of(att: &serde_json::Value) -> String {
    att["ip"].as_str().unwrap().split('/').next().unwrap().to_string()
}

/// The instance's own `eth0`, seen from vesseld's side: `ip -d` of it in the instance's namespace.
fn instance_eth0(d: &Daemon, name: &str) -> String {
    let id = d.inspect(name)["id"].as_str().unwrap().to_string();
    let ns = d.run.join("netns").join(id);
    ip(&ns, &["-d", "-o", "addr", "show", "eth0"]) + &ip(&ns, &["-d", "-o", "link", "show", "eth0"])
}

fn network_names(d: &Daemon) -> Vec<String> {
    let nets: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "ls", "--format", "json"])).unwrap();
    let mut names: Vec<String> = nets
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn macvlan_on_a_veth_parent_gives_addresses_reaches_outside_and_each_other_and_leaves_the_parent() {
    let d = Daemon::start("mv-lan");
    let outside = veth_parent(&d, "vtpar", "outside", Some("203.0.113.1/24"));
    serve(&outside, "outside", "203.0.113.1", 7000);

    d.ok(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "--parent",
        "vtpar",
        "--subnet",
        "203.0.113.0/24",
        "lan",
    ]);
    let net = d.inspect_network("lan");
    assert_eq!(net["driver"], "macvlan", "{net}");
    assert_eq!(net["parent"], "vtpar", "{net}");
    assert_eq!(net["gateway"], "203.0.113.1", "{net}");

    web(&d, "m1", &["--network", "lan"], "from-m1");
    web(&d, "m2", &["--network", "lan", "--ip", "203.0.113.50"], "from-m2");

    // Their addresses, as vesseld records them and as the instances have them, on macvlan links.
    let (a1, a2) = (attachment(&d, "m1", "lan"), attachment(&d, "m2", "lan"));
    assert_eq!(a2["ip"], "203.0.113.50/24", "{a2}");
    let ip1 = addr_of(&a1);
    assert!(
        ip1.starts_with("203.0.113.") && a1["ip"].as_str().unwrap().ends_with("/24"),
        "{a1}"
    );
    assert!(!["203.0.113.1", "203.0.113.50"].contains(&ip1.as_str()), "{a1}");
    for (a, name) in [(&a1, "m1"), (&a2, "m2")] {
        assert_eq!(a["gateway"], "203.0.113.1", "{a}");
        let eth0 = instance_eth0(&d, name);
        assert!(
            eth0.contains(&format!("inet {}", a["ip"].as_str().unwrap())),
            "{name}: {eth0}"
        );
        assert!(eth0.contains("macvlan mode bridge"), "{name}: {eth0}");
        assert!(
            eth0.contains(&format!("link/ether {}", a["mac"].as_str().unwrap())),
            "{name}: {eth0}"
        );
    }

    // Out over the parent, with their own addresses (no NAT) ...
    assert_eq!(
        fetch(&d, "m1", "203.0.113.1", 7000).unwrap().trim(),
        format!("outside seen-from {ip1}")
    );
    assert_eq!(
        fetch(&d, "m2", "203.0.113.1", 7000).unwrap().trim(),
        "outside seen-from 203.0.113.50"
    );
    // ... in from outside ...
    assert_eq!(get_from(&outside, "203.0.113.50", 80).unwrap().trim(), "from-m2");
    assert_eq!(get_from(&outside, &ip1, 80).unwrap().trim(), "from-m1");
    // ... and to each other (bridge mode).
    assert_eq!(fetch(&d, "m1", "203.0.113.50", 80).unwrap().trim(), "from-m2");
    assert_eq!(fetch(&d, "m2", &ip1, 80).unwrap().trim(), "from-m1");

    // In use: refused, and nothing changes.
    let err = d.fails(&["network", "rm", "lan"]);
    assert!(err.contains("in use"), "{err}");
    assert_eq!(fetch(&d, "m1", "203.0.113.50", 80).unwrap().trim(), "from-m2");

    d.ok(&["rm", "-f", "m1", "m2"]);
    d.ok(&["network", "rm", "lan"]);
    assert!(!network_names(&d).contains(&"lan".to_string()));
    // The parent is the host's: it stays, up; no macvlan link is left on either side.
    let parent = ip(host(&d), &["-o", "link", "show", "vtpar"]);
    assert!(parent.contains(",UP"), "{parent}");
    assert_eq!(links(host(&d), "macvlan"), Vec::<String>::new());
    assert_eq!(links(&outside.path, "macvlan"), Vec::<String>::new());
    assert_eq!(links(&outside.path, ""), ["eth0", "lo"]);
    d.assert_clean_after_rm_all();
}

#[test]
fn vlan_network_makes_a_tagged_sub_interface_its_traffic_stays_on_vlan_42_and_rm_removes_it() {
    let d = Daemon::start("mv-vlan");
    // The far end: eth0 untagged (with an address of the VLAN's subnet, which must stay out of reach) in
    // one namespace; its VLAN 42 sub-interface, moved to a namespace of its own, is the VLAN's gateway.
    let untagged = veth_parent(&d, "vtpar", "untagged", Some("198.18.42.99/24"));
    let tagged = Scratch::new(&d, "tagged");
    let host_links = links(host(&d), "");
    let v42 = [
        "network",
        "create",
        "--driver",
        "macvlan",
        "--parent",
        "vtpar",
        "--vlan",
        "42",
        "--subnet",
        "198.18.42.0/24",
        "v42",
    ];
    if !add_vlan(&untagged.path, "eth0", "eth0.42", "42") {
        // No 802.1Q in this kernel: the network is refused in one line, and nothing of it is left.
        let err = d.fails(&v42);
        assert!(err.contains("802.1Q"), "{err}");
        assert!(!network_names(&d).contains(&"v42".to_string()));
        assert_eq!(links(host(&d), ""), host_links);
        d.assert_clean_after_rm_all();
        eprintln!("NOTE: this kernel has no 802.1Q VLAN support: tagged traffic was not tested");
        return;
    }
    ip(
        &untagged.path,
        &[
            "link",
            "set",
            "eth0.42",
            "netns",
            &tagged.path.display().to_string(),
        ],
    );
    ip(&tagged.path, &["addr", "add", "198.18.42.1/24", "dev", "eth0.42"]);
    ip(&tagged.path, &["link", "set", "eth0.42", "up"]);
    serve(&tagged, "tagged", "198.18.42.1", 7000);
    serve(&untagged, "untagged", "198.18.42.99", 7000);

    d.ok(&v42);
    // The 802.1Q sub-interface, made with the network, up.
    let net = d.inspect_network("v42");
    assert_eq!(net["vlan"], 42, "{net}");
    assert_eq!(net["link"], "vtpar.42", "{net}");
    let sub = ip(host(&d), &["-d", "-o", "link", "show", "vtpar.42"]);
    assert!(sub.contains("vtpar.42@vtpar"), "{sub}");
    assert!(sub.contains("vlan protocol 802.1Q id 42"), "{sub}");
    assert!(sub.contains(",UP"), "{sub}");

    web(&d, "v1", &["--network", "v42"], "from-v1");
    let ip1 = addr_of(&attachment(&d, "v1", "v42"));
    let eth0 = instance_eth0(&d, "v1");
    assert!(eth0.contains("macvlan mode bridge"), "{eth0}");

    // Only tagged frames reach the VLAN's end: both ways there, neither way on the untagged interface.
    assert_eq!(
        fetch(&d, "v1", "198.18.42.1", 7000).unwrap().trim(),
        format!("tagged seen-from {ip1}")
    );
    assert_eq!(get_from(&tagged, &ip1, 80).unwrap().trim(), "from-v1");
    let leak = fetch(&d, "v1", "198.18.42.99", 7000);
    assert!(leak.is_err(), "untagged reached from VLAN 42: {leak:?}");
    let leak = get_from(&untagged, &ip1, 80);
    assert!(leak.is_err(), "VLAN 42 reached untagged: {leak:?}");

    // Another network on the same VLAN of the same parent: refused (removing it would take the
    // sub-interface from under v42), and v42 is as it was.
    let err = d.fails(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "--parent",
        "vtpar",
        "--vlan",
        "42",
        "--subnet",
        "198.18.43.0/24",
        "v42b",
    ]);
    assert!(err.contains("vtpar.42") && err.contains("v42"), "{err}");
    // Nor may the sub-interface be another network's parent.
    let err = d.fails(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "--parent",
        "vtpar.42",
        "--subnet",
        "198.18.44.0/24",
        "v42b",
    ]);
    assert!(err.contains("VLAN link of network v42"), "{err}");
    assert!(!network_names(&d).contains(&"v42b".to_string()));
    assert_eq!(
        fetch(&d, "v1", "198.18.42.1", 7000).unwrap().trim(),
        format!("tagged seen-from {ip1}")
    );

    let err = d.fails(&["network", "rm", "v42"]);
    assert!(err.contains("in use"), "{err}");
    assert!(try_ip(host(&d), &["link", "show", "vtpar.42"]).is_ok());

    // Removed with the network; the parent and the far end stay.
    d.ok(&["rm", "-f", "v1"]);
    d.ok(&["network", "rm", "v42"]);
    assert!(
        try_ip(host(&d), &["link", "show", "vtpar.42"]).is_err(),
        "the VLAN link outlived its network"
    );
    assert_eq!(links(host(&d), ""), host_links);
    assert_eq!(links(host(&d), "vlan"), Vec::<String>::new());
    assert_eq!(links(host(&d), "macvlan"), Vec::<String>::new());
    assert_eq!(links(&tagged.path, ""), ["eth0.42", "lo"]);
    d.assert_clean_after_rm_all();
}

#[test]
fn bad_macvlan_input_is_one_line_and_creates_nothing() {
    let d = Daemon::start("mv-bad");
    // Parents: veth pairs (this kernel may have no dummy links either).
    for (parent, peer) in [("vtp", "vtp-peer"), ("vtparent012345", "vtlong-peer")] {
        ip(
            host(&d),
            &["link", "add", parent, "type", "veth", "peer", "name", peer],
        );
        ip(host(&d), &["link", "set", parent, "up"]);
    }
    // A VLAN sub-interface the host made itself, when the kernel has VLANs.
    let vlans = add_vlan(host(&d), "vtp", "vtp.7", "7");
    let nets = network_names(&d);
    let host_links = links(host(&d), "");
    let mv = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut a = vec!["network", "create", "--driver", "macvlan"];
        a.extend_from_slice(extra);
        a.push("m");
        a
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (mv(&["--subnet", "192.0.2.0/24"]), "needs --parent"),
        (
            mv(&["--parent", "nosuch0", "--subnet", "192.0.2.0/24"]),
            "\"nosuch0\" does not exist",
        ),
        (
            mv(&["--parent", "vtp", "--vlan", "0", "--subnet", "192.0.2.0/24"]),
            "VLAN id 0 is not in 1-4094",
        ),
        (
            mv(&["--parent", "vtp", "--vlan", "4095", "--subnet", "192.0.2.0/24"]),
            "VLAN id 4095 is not in 1-4094",
        ),
        (
            vec!["network", "create", "--vlan", "42", "m"],
            "belong to --driver macvlan",
        ),
        (
            vec!["network", "create", "--parent", "vtp", "--vlan", "42", "m"],
            "belong to --driver macvlan",
        ),
        (
            vec!["network", "create", "--driver", "bridge", "--vlan", "42", "m"],
            "belong to --driver macvlan",
        ),
        (mv(&["--parent", "vtp"]), "needs --subnet"),
        (
            mv(&[
                "--parent",
                "vtparent012345",
                "--vlan",
                "42",
                "--subnet",
                "192.0.2.0/24",
            ]),
            "longer than an interface name",
        ),
        (
            mv(&["--parent", "vtp", "--vlan", "7", "--subnet", "192.0.2.0/24"]),
            if vlans { "vtp.7 exists already" } else { "802.1Q" },
        ),
    ];
    for (args, want) in &cases {
        let err = d.fails(args);
        assert!(err.contains(want), "vessel {args:?}: {err}");
        assert_eq!(network_names(&d), nets, "vessel {args:?} made a network");
        assert_eq!(
            links(host(&d), ""),
            host_links,
            "vessel {args:?} changed the links"
        );
    }
    if vlans {
        // The host's VLAN link is still its own, untouched.
        let sub = ip(host(&d), &["-d", "-o", "link", "show", "vtp.7"]);
        assert!(sub.contains("vlan protocol 802.1Q id 7"), "{sub}");
    }
    assert_eq!(links(host(&d), "macvlan"), Vec::<String>::new());
    d.assert_clean_after_rm_all();
}
