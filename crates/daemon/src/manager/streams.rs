//! The streaming verbs: attach (a connection to the supervisor, now or at the next start), exec (a helper
//! process whose stdin/stdout carry frames), and logs (records from the rotated log files, then followed).

use std::io::{BufRead, Seek};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use vessel_api::{ExecConfig, LogRecord, Status};

use super::{Manager, ManagerError};
use crate::supervisor::logfile::log_files;

/// An exec'd process's helper; its stdin takes frames from the client and its stdout gives frames back.
pub struct ExecSession {
    pub child: tokio::process::Child,
}

#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only the last N records (of those after `since`).
    pub tail: Option<usize>,
    /// Only records at or after this time (since the epoch).
    pub since: Option<Duration>,
    pub follow: bool,
}

impl Manager {
    /// A connection to the instance's supervisor: at once when it runs, else when it is next started.
    /// `size` (rows, columns) is the client's terminal: an instance started for this client gets it from the
    /// first moment.
    pub fn attach(
        &self,
        name_or_id: &str,
        size: Option<(u16, u16)>,
    ) -> Result<oneshot::Receiver<Result<UnixStream, String>>, ManagerError> {
        let r = self.find(name_or_id)?;
        let (tx, rx) = oneshot::channel();
        match r.instance.state.status {
            Status::Running | Status::Paused => {
                let path = self.cfg.attach_socket(&r.instance.id);
                tokio::spawn(async move {
                    let _ = tx.send(
                        UnixStream::connect(&path)
                            .await
                            .map_err(|e| format!("Cannot attach: {e}")),
                    );
                });
            }
            Status::Created | Status::Exited | Status::Starting => {
                let live = self.live(&r.instance.id);
                if size.is_some() {
                    *live.pending_size.lock().unwrap_or_else(|p| p.into_inner()) = size;
                }
                live.pending_attaches
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(tx);
            }
            s => {
                return Err(ManagerError::Conflict(format!(
                    "Instance {} is {s}: it cannot be attached to",
                    r.instance.name
                )))
            }
        }
        Ok(rx)
    }

    pub(super) async fn connect_pending_attaches(&self, id: &str) {
        let pending: Vec<_> = std::mem::take(
            &mut *self
                .live(id)
                .pending_attaches
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let path = self.cfg.attach_socket(id);
        for tx in pending {
            let conn = UnixStream::connect(&path)
                .await
                .map_err(|e| format!("Cannot attach: {e}"));
            let _ = tx.send(conn);
        }
    }

    pub(super) fn fail_pending_attaches(&self, id: &str, msg: &str) {
        let pending: Vec<_> = std::mem::take(
            &mut *self
                .live(id)
                .pending_attaches
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for tx in pending {
            let _ = tx.send(Err(msg.to_string()));
        }
    }

    /// Start a process in a running instance.
    pub async fn exec(&self, name_or_id: &str, ec: ExecConfig) -> Result<ExecSession, ManagerError> {
        let r = self.find(name_or_id)?;
        if r.instance.state.status != Status::Running {
            return Err(ManagerError::Conflict(format!(
                "Instance {} is {}: exec needs it running",
                r.instance.name, r.instance.state.status
            )));
        }
        if super::vm::has_agent(&r.instance) {
            return Err(ManagerError::Invalid(format!(
                "Instance {} is a VM: exec through its guest agent is not in this vesseld yet",
                r.instance.name
            )));
        }
        if super::vm::is_vm(&r.instance) {
            return Err(ManagerError::Invalid(format!(
                "Instance {} is a VM without vessel's guest agent: exec needs the agent (use its console)",
                r.instance.name
            )));
        }
        if ec.command.is_empty() {
            return Err(ManagerError::Invalid("exec needs a command".into()));
        }
        for kv in &ec.env {
            if kv.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                return Err(ManagerError::Invalid(format!(
                    "Invalid environment variable {kv:?}: use KEY=VALUE with a non-empty KEY"
                )));
            }
        }
        let dir = self.cfg.instance_dir(&r.instance.id);
        let spec: Value = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                ManagerError::Internal(format!("Cannot read the config of {}", r.instance.name))
            })?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(ec.command);
        process["terminal"] = serde_json::json!(ec.tty);
        if let (true, Some(rows), Some(cols)) = (ec.tty, ec.rows, ec.cols) {
            process["consoleSize"] = serde_json::json!({ "height": rows, "width": cols });
        }
        if let Some(env) = process["env"].as_array_mut() {
            for kv in &ec.env {
                let key = kv.split('=').next().unwrap_or("");
                env.retain(|e| e.as_str().and_then(|s| s.split('=').next()) != Some(key));
                env.push(serde_json::json!(kv));
            }
        }
        if let Some(w) = &ec.workdir {
            process["cwd"] = serde_json::json!(w);
        }
        if let Some(u) = &ec.user {
            let (uid, gid) = super::bundle::resolve_user(u, &dir.join("rootfs"))?;
            process["user"] = serde_json::json!({ "uid": uid, "gid": gid });
        }
        let child = tokio::process::Command::new(&self.cfg.supervisor)
            .arg("exec")
            .arg("--id")
            .arg(&r.instance.id)
            .arg("--runtime-root")
            .arg(self.cfg.runtime_root())
            .arg("--process")
            .arg(process.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                ManagerError::Internal(format!("Cannot run {}: {e}", self.cfg.supervisor.display()))
            })?;
        Ok(ExecSession { child })
    }

    /// The instance's log records, as JSON lines, on a channel (ended when done, or when the instance
    /// stops while followed).
    pub fn logs(
        self: &Arc<Self>,
        name_or_id: &str,
        q: LogQuery,
    ) -> Result<mpsc::Receiver<Vec<u8>>, ManagerError> {
        let r = self.find(name_or_id)?;
        let (tx, rx) = mpsc::channel(64);
        let mgr = self.clone();
        let id = r.instance.id.clone();
        tokio::task::spawn_blocking(move || mgr.send_logs(&id, q, tx));
        Ok(rx)
    }

    fn send_logs(&self, id: &str, q: LogQuery, tx: mpsc::Sender<Vec<u8>>) {
        let path = self.cfg.log_file(id);
        let keep = |line: &str| match q.since {
            None => true,
            Some(since) => serde_json::from_str::<LogRecord>(line)
                .ok()
                .and_then(|r| vessel_api::time::parse_rfc3339(&r.time))
                .is_some_and(|t| t >= since),
        };
        let mut lines: Vec<String> = Vec::new();
        for f in log_files(&path, self.cfg.log_max_files) {
            if let Ok(file) = std::fs::File::open(&f) {
                lines.extend(
                    std::io::BufReader::new(file)
                        .lines()
                        .map_while(Result::ok)
                        .filter(|l| keep(l)),
                );
            }
        }
        if let Some(n) = q.tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        for l in lines {
            let mut b = l.into_bytes();
            b.push(b'\n');
            if tx.blocking_send(b).is_err() {
                return;
            }
        }
        if !q.follow {
            return;
        }
        // Follow: read what is appended; a rotation shows as a smaller file (start again from its top).
        let mut pos = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut partial = String::new();
        loop {
            let active = self
                .store
                .get(id)
                .map(|r| r.instance.state.status.is_active() || r.instance.state.status == Status::Created)
                .unwrap_or(false);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0;
            }
            if len > pos {
                if let Ok(mut f) = std::fs::File::open(&path) {
                    if f.seek(std::io::SeekFrom::Start(pos)).is_ok() {
                        let mut reader = std::io::BufReader::new(f);
                        let mut line = String::new();
                        while let Ok(n) = reader.read_line(&mut line) {
                            if n == 0 {
                                break;
                            }
                            pos += n as u64;
                            if line.ends_with('\n') {
                                let whole = std::mem::take(&mut partial) + &line;
                                if tx.blocking_send(whole.into_bytes()).is_err() {
                                    return;
                                }
                            } else {
                                partial.push_str(&line);
                            }
                            line.clear();
                        }
                    }
                }
            } else if !active || tx.is_closed() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
