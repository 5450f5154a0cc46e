//! vesseld killed with SIGKILL at random points of a loop of creates, starts, stops and deletes, 200 times:
//! after each restart the store and the host agree, no instance is lost or half made, nothing leaks.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{api, Daemon, IMAGE};

const KILLS: usize = 200;

/// A small deterministic generator (xorshift), seeded per run, for the kill delays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One round of the worker's API calls (errors are expected while the daemon is down); whether its create
/// was answered.
fn work(socket: &Path, n: u64) -> bool {
    let name = format!("w{n}");
    let body = format!(r#"{{"image":"{IMAGE}","name":"{name}","command":["sleep","300"]}}"#);
    let created = api(socket, "POST", "/1.0/instances", &body).0 == 201;
    api(
        socket,
        "PUT",
        &format!("/1.0/instances/{name}/state"),
        r#"{"action":"start"}"#,
    );
    api(
        socket,
        "PUT",
        &format!("/1.0/instances/{name}/state"),
        r#"{"action":"stop","timeout":0}"#,
    );
    api(socket, "DELETE", &format!("/1.0/instances/{name}?force=true"), "");
    created
}

fn check_agreement(d: &Daemon, round: usize) {
    let list = d.json("GET", "/1.0/instances?all=true", "");
    let list = list.as_array().unwrap();
    let mut running = HashSet::new();
    let mut known = HashSet::new();
    for i in list {
        let id = i["id"].as_str().unwrap().to_string();
        let status = i["state"]["status"].as_str().unwrap();
        let rootfs = d.root.join("instances").join(&id).join("rootfs");
        let state_dir = d.run.join("runtime").join(&id);
        assert!(
            d.root.join("instances").join(&id).join("config.json").exists(),
            "round {round}: {id} ({status}) has no files"
        );
        match status {
            "running" => {
                assert!(
                    state_dir.exists(),
                    "round {round}: {id} running without a container"
                );
                assert!(
                    is_mount(&rootfs),
                    "round {round}: {id} running without its root filesystem"
                );
                running.insert(id.clone());
            }
            "created" | "exited" => {
                assert!(
                    !state_dir.exists(),
                    "round {round}: {id} {status} but a container exists"
                );
            }
            other => panic!("round {round}: {id} left in transitional status {other}"),
        }
        known.insert(id);
    }
    for e in std::fs::read_dir(d.root.join("instances"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = e.file_name().to_string_lossy().into_owned();
        assert!(
            known.contains(&id),
            "round {round}: files of unknown instance {id}"
        );
    }
    let root = d.root.to_string_lossy().into_owned();
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        if let Some(mp) = line.split(' ').nth(4).filter(|m| m.starts_with(&root)) {
            assert!(
                running.iter().any(|id| mp.contains(id.as_str())),
                "round {round}: stray mount {mp}"
            );
        }
    }
    for ctl in ["memory", "pids", "freezer"] {
        for e in std::fs::read_dir(Path::new("/sys/fs/cgroup").join(ctl).join(&d.name))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_type().unwrap().is_dir() {
                let id = e.file_name().to_string_lossy().into_owned();
                assert!(running.contains(&id), "round {round}: stray cgroup {ctl}/{id}");
            }
        }
    }
    for line in d.leftovers().iter().filter(|l| l.starts_with("process ")) {
        assert!(
            running.iter().any(|id| line.contains(id.as_str())),
            "round {round}: stray {line}"
        );
    }
}

fn is_mount(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(p),
        p.parent().and_then(|q| std::fs::metadata(q).ok()),
    ) {
        (Ok(a), Some(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

#[test]
fn two_hundred_kill_nines_leave_store_and_host_in_agreement() {
    let mut d = Daemon::start("chaos");
    let socket = d.socket();
    let hold = Arc::new(AtomicBool::new(false));
    let idle = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let worker = {
        let (socket, hold, idle, stop, counter) = (
            socket.clone(),
            hold.clone(),
            idle.clone(),
            stop.clone(),
            counter.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                if hold.load(Ordering::SeqCst) {
                    idle.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                idle.store(false, Ordering::SeqCst);
                if work(&socket, n) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                n += 1;
            }
        })
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("chaos seed {seed}");
    let mut rng = Rng(seed);
    for round in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.below(250)));
        d.kill9();
        hold.store(true, Ordering::SeqCst);
        while !idle.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(2));
        }
        d.spawn();
        check_agreement(&d, round);
        hold.store(false, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap();
    let done = counter.load(Ordering::SeqCst);
    assert!(
        done >= 20,
        "the worker made too little progress to test anything: {done} instances created"
    );
    // Kills landed mid-work: reconciliation had things to finish or undo.
    let repairs = d
        .daemon_log()
        .lines()
        .filter(|l| l.contains("reconcile:"))
        .count();
    eprintln!("{done} instances created, {repairs} repairs by reconciliation");
    assert!(repairs > 0, "no kill interrupted anything: {}", d.daemon_log());
    // The daemon still works, and removes everything.
    d.ok(&["run", "--rm", IMAGE, "true"]);
    d.assert_clean_after_rm_all();
}
