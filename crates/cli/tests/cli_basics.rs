//! The command line itself: image commands in JSON, clear one-line errors for bad input, clap's whole
//! message for usage errors, quiet ends on closed pipes.

mod support;

use std::process::{Command, Stdio};

use support::{Daemon, IMAGE};

#[test]
fn every_image_command_speaks_json() {
    let e = Daemon::start("json");
    let parse = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let out = e.vessel(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!(
                "{args:?} printed no JSON ({err}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    let images = parse(&["images"]);
    assert_eq!(images[0]["name"], "docker.io/t/busybox:latest");
    assert_eq!(parse(&["tag", "t/busybox", "t/other:1"])["name"], "t/other:1");
    let inspected = parse(&["image", "inspect", "t/other:1"]);
    assert_eq!(inspected[0]["Id"], images[0]["id"]);
    let archive = e.base.join("saved.tar");
    let archive = archive.display().to_string();
    parse(&["save", "-o", &archive, "t/other:1"]);
    assert_eq!(parse(&["rmi", "t/other:1"])["untagged"][0], "t/other:1");
    assert_eq!(parse(&["load", "-i", &archive])[0]["name"], "docker.io/t/other:1");
    assert_eq!(
        parse(&["image", "unpack", "t/other:1"])[0]["layers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(parse(&["image", "prune"])["blobs_removed"].is_number());
    assert!(parse(&["ps", "-a"]).is_array());
}

#[test]
fn bad_input_is_one_clear_line_and_changes_nothing() {
    let d = Daemon::start("badcli");
    let err = d.fails(&["run", "--rm", "--pull", "never", "no/such:image", "true"]);
    assert!(
        err.contains("no/such:image") && err.contains("not in the image store"),
        "{err}"
    );
    // Pulled on demand from a registry that is not there: the pull's own error, one line.
    let err = d.fails(&["run", "--rm", "127.0.0.1:1/no/such:image", "true"]);
    assert!(
        err.contains("Cannot reach registry 127.0.0.1:1") && err.contains("no/such:image"),
        "{err}"
    );
    let err = d.fails(&["run", "UPPER/Case:::", "true"]);
    assert!(err.contains("Invalid image reference"), "{err}");
    let err = d.fails(&["run", "-e", "=x", IMAGE, "true"]);
    assert!(err.contains("\"=x\""), "{err}");
    let err = d.fails(&["run", "--memory", "1k", IMAGE, "true"]);
    assert!(err.contains("minimum of 6 MiB"), "{err}");
    let err = d.fails(&["run", "--restart", "sometimes", IMAGE, "true"]);
    assert!(err.contains("restart policy"), "{err}");
    let err = d.fails(&["run", "--ulimit", "nofile", IMAGE, "true"]);
    assert!(err.contains("--ulimit"), "{err}");
    let err = d.fails(&["run", "--cap-add", "FLY", IMAGE, "true"]);
    assert!(err.contains("FLY"), "{err}");
    let err = d.fails(&["ps", "--format", "{{.Name"]);
    assert!(err.contains("not closed"), "{err}");
    let err = d.fails(&["stop", "nosuch"]);
    assert!(err.contains("No such instance: nosuch"), "{err}");
    d.ok(&["create", "--name", "dup", IMAGE, "true"]);
    let err = d.fails(&["create", "--name", "dup", IMAGE, "true"]);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]).lines().count(), 1);
    d.assert_clean_after_rm_all();
    // No daemon: say so, and how to start one.
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .args(["--host", "unix:///nonexistent/vessel.sock", "ps"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Cannot reach vesseld") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn usage_errors_show_clap_whole_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("run")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("<IMAGE>") && err.contains("Usage: vessel run"),
        "{err}"
    );
    let runtime = std::path::Path::new(env!("CARGO_BIN_EXE_vessel")).with_file_name("vessel-runtime");
    let out = Command::new(runtime).args(["create"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Usage: vessel-runtime create") && err.contains("<ID>"),
        "{err}"
    );
}

#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    let d = Daemon::start("pipe");
    for _ in 0..3 {
        d.ok(&["create", IMAGE, "true"]);
    }
    for args in [
        vec!["images", "--format", "json"],
        vec!["ps", "-a"],
        vec!["ps", "-a", "--format", "json"],
    ] {
        let mut cmd = d.cmd(&args);
        // `| grep -q .` whose reader is gone before vessel writes (it first asks vesseld or the store).
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", out.status);
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.assert_clean_after_rm_all();
}
