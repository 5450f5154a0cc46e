//! Running OCI hooks: the hook's path and argv, its own environment only, the container state on stdin, and
//! its timeout.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{stage} hook {path} could not start: {source}")]
    Spawn {
        stage: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{stage} hook {path} failed with {status}{stderr}")]
    Failed {
        stage: &'static str,
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("{stage} hook {path} timed out after {secs} s")]
    Timeout {
        stage: &'static str,
        path: PathBuf,
        secs: i64,
    },
    #[error("{stage} hook {path} has an invalid timeout {secs}: it must be greater than zero")]
    BadTimeout {
        stage: &'static str,
        path: PathBuf,
        secs: i64,
    },
}

/// Run each hook in order; the first failure stops the list.
pub fn run_all(stage: &'static str, hooks: Option<&Vec<Hook>>, state_json: &str) -> Result<(), HookError> {
    for hook in hooks.into_iter().flatten() {
        run(stage, hook, state_json)?;
    }
    Ok(())
}

pub fn run(stage: &'static str, hook: &Hook, state_json: &str) -> Result<(), HookError> {
    let path = hook.path().clone();
    let timeout = match hook.timeout() {
        Some(secs) if secs <= 0 => return Err(HookError::BadTimeout { stage, path, secs }),
        Some(secs) => Some(secs),
        None => None,
    };
    let mut cmd = Command::new(&path);
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            cmd.arg0(argv0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        stage,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s as u64));
    let mut pause = Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(HookError::Spawn { stage, path, source }),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                stage,
                path,
                secs: timeout.unwrap_or(0),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut err);
    }
    let err = err.trim();
    let stderr = if err.is_empty() {
        String::new()
    } else {
        format!(": {}", err.lines().last().unwrap_or(""))
    };
    Err(HookError::Failed {
        stage,
        path,
        status: status.to_string(),
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    #[test]
    fn hook_gets_state_on_stdin_and_its_env() {
        let dir = std::env::temp_dir().join(format!("vessel-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let hook = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".into(),
                "-c".into(),
                format!("cat > {0}; echo \" $X\" >> {0}", out.display()),
            ])
            .env(vec!["X=hello".into()])
            .build()
            .unwrap();
        run("test", &hook, "{\"id\":\"c1\"}").unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, "{\"id\":\"c1\"} hello\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failing_and_slow_hooks_are_errors() {
        let fail = HookBuilder::default()
            .path("/bin/sh")
            .args(vec!["sh".into(), "-c".into(), "echo boom >&2; exit 3".into()])
            .build()
            .unwrap();
        let e = run("prestart", &fail, "{}").unwrap_err().to_string();
        assert!(e.contains("exit status: 3") && e.contains("boom"), "{e}");
        let slow = HookBuilder::default()
            .path("/bin/sleep")
            .args(vec!["sleep".into(), "5".into()])
            .timeout(1)
            .build()
            .unwrap();
        assert!(matches!(
            run("poststart", &slow, "{}"),
            Err(HookError::Timeout { .. })
        ));
    }
}
