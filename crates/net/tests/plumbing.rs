//! The plumbing against the real kernel, inside a network namespace of the test's own (as root): a bridge,
//! a veth attachment into a kept namespace with addresses and routes, TCP across it both ways, and the
//! nftables table made and removed.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};

use vessel_net::firewall::{self, Firewall, FirewallNetwork, Forward, Proto};
use vessel_net::netns::{self, NetNs};
use vessel_net::{bridge, link, veth};

/// Runs `f` on a thread in a new network namespace (dropped with the thread).
fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare a network namespace (run as root)");
            f()
        })
        .join()
        .expect("test thread")
    })
}

#[test]
fn bridge_veth_addresses_routes_and_firewall() {
    let dir = std::env::temp_dir().join(format!("vessel-net-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ns_path = dir.join("ns");
    in_new_netns(|| {
        let br = bridge::Bridge {
            name: "vessel0".into(),
            mtu: 1500,
            addresses: vec![
                ("10.99.0.1".parse().unwrap(), 24),
                ("fd99::1".parse().unwrap(), 64),
            ],
        };
        bridge::ensure(&br).unwrap();
        bridge::ensure(&br).expect("ensure is idempotent");
        let ns = NetNs::create(&ns_path).unwrap();
        assert!(netns::is_namespace(&ns_path));
        let ep = veth::Endpoint {
            ifname: "eth0".into(),
            host_ifname: "vtest0".into(),
            mac: [0x02, 0, 0, 0, 0, 9],
            mtu: 1500,
            addresses: vec![
                ("10.99.0.2".parse().unwrap(), 24),
                ("fd99::2".parse().unwrap(), 64),
            ],
            gateways: vec!["10.99.0.1".parse().unwrap(), "fd99::1".parse().unwrap()],
            rate: None,
        };
        veth::attach(&ns, "vessel0", &ep).unwrap();
        assert!(link::index("vtest0").is_some(), "host end on the host");
        assert!(link::index("eth0").is_none(), "the peer never shows on the host");

        // Host → instance and instance → host, over IPv4 and IPv6.
        for (host_addr, inst_addr) in [("10.99.0.1", "10.99.0.2"), ("fd99::1", "fd99::2")] {
            let host_ip: IpAddr = host_addr.parse().unwrap();
            let listener = TcpListener::bind((host_ip, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let inst_ip: IpAddr = inst_addr.parse().unwrap();
            let got = ns
                .enter(move || {
                    let routes = std::fs::read_to_string("/proc/self/net/route").unwrap_or_default();
                    let mut s = TcpStream::connect((host_ip, port)).map_err(|e| {
                        vessel_net::NetError::Missing(format!(
                            "connect from the instance: {e}; routes: {routes}"
                        ))
                    })?;
                    s.write_all(b"hi").unwrap();
                    let inner = TcpListener::bind((inst_ip, 0)).unwrap();
                    Ok(inner)
                })
                .unwrap();
            let (mut c, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip(), inst_ip);
            let mut buf = [0u8; 2];
            c.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hi");
            TcpStream::connect(got.local_addr().unwrap()).expect("host reaches the instance");
        }

        let fw = Firewall {
            table: "vessel".into(),
            networks: vec![FirewallNetwork {
                bridge: "vessel0".into(),
                subnet4: Some("10.99.0.0/24".parse().unwrap()),
                subnet6: Some("fd99::/64".parse().unwrap()),
                internal: false,
            }],
            forwards: vec![Forward {
                proto: Proto::Tcp,
                host_ip: None,
                host_ports: (8080, 8080),
                target4: Some("10.99.0.2".parse().unwrap()),
                target6: None,
                target_ports: (80, 80),
            }],
        };
        firewall::apply(&fw).unwrap();
        firewall::apply(&fw).expect("apply again replaces the table");
        let listing = vessel_net::nft::list_ruleset().unwrap().to_string();
        assert!(listing.contains("\"vessel\""), "{listing}");
        assert!(listing.contains("dnat"), "{listing}");
        firewall::apply(&Firewall {
            table: "vessel".into(),
            ..Default::default()
        })
        .unwrap();
        let listing = vessel_net::nft::list_ruleset().unwrap().to_string();
        assert!(!listing.contains("\"vessel\""), "{listing}");

        veth::detach(&ns, "eth0").unwrap();
        assert!(link::index("vtest0").is_none(), "the host end goes with its peer");
        drop(ns);
        netns::remove(&ns_path).unwrap();
        assert!(!ns_path.exists());
        bridge::remove("vessel0").unwrap();
        assert!(link::index("vessel0").is_none());
    });
    let _ = std::fs::remove_dir_all(&dir);
}
