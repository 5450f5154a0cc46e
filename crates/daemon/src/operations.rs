//! Asynchronous operations: long work (a pull, a create that pulls, a delete) runs as a task with an id
//! that clients poll, wait on or cancel. Kept in memory only: an operation does not outlive vesseld (the
//! work it left half done is the store's and reconciliation's business, a pull's partial blobs resume).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vessel_api::{Operation, OperationProgress, OperationStatus};

use crate::manager::ManagerError;

/// How long a finished operation stays to be asked about.
const KEEP_FINISHED: Duration = Duration::from_secs(300);

struct Entry {
    op: Mutex<Operation>,
    finished_at: Mutex<Option<Instant>>,
    /// Flips to true once, when the operation ends.
    done: watch::Sender<bool>,
    cancel: AtomicBool,
}

/// The work's side of an operation: it reports progress and looks at whether it was cancelled.
#[derive(Clone)]
pub struct OpHandle {
    entry: Arc<Entry>,
}

impl OpHandle {
    pub fn cancelled(&self) -> bool {
        self.entry.cancel.load(Ordering::Relaxed)
    }

    pub fn progress(&self, change: impl FnOnce(&mut OperationProgress)) {
        let mut op = self.entry.op.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut op.progress);
        op.updated_at = vessel_runtime::clock::now_rfc3339();
    }

    pub fn stage(&self, stage: impl Into<String>) {
        let stage = stage.into();
        self.progress(|p| p.stage = stage);
    }

    /// From now on a cancel is refused (the work reached a point it finishes regardless); an error if one
    /// already came, which the work then ends with.
    pub fn no_more_cancel(&self) -> Result<(), ManagerError> {
        let mut op = self.entry.op.lock().unwrap_or_else(|p| p.into_inner());
        if self.cancelled() {
            return Err(ManagerError::Cancelled(format!(
                "{} was cancelled",
                op.description
            )));
        }
        op.may_cancel = false;
        Ok(())
    }
}

#[derive(Default)]
pub struct Operations {
    map: Mutex<HashMap<String, Arc<Entry>>>,
}

/// What an operation's work returns: a result document on success.
pub type OpResult = Result<Option<serde_json::Value>, ManagerError>;

impl Operations {
    /// Start `work` as a task and return the operation as it is at once (status running).
    pub fn start<F, Fut>(&self, kind: &str, description: String, resources: Vec<String>, work: F) -> Operation
    where
        F: FnOnce(OpHandle) -> Fut,
        Fut: Future<Output = OpResult> + Send + 'static,
    {
        self.purge();
        let now = vessel_runtime::clock::now_rfc3339();
        // Random, so that ids are not guessed; a counter if /dev/urandom fails (ids stay unique either way).
        static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = crate::manager::random_id()
            .map(|id| id[..32].to_string())
            .unwrap_or_else(|_| {
                let n = FALLBACK.fetch_add(1, Ordering::Relaxed);
                format!("{:016x}{n:016x}", std::process::id())
            });
        let op = Operation {
            id: id.clone(),
            kind: kind.into(),
            description,
            status: OperationStatus::Running,
            created_at: now.clone(),
            updated_at: now,
            resources,
            progress: OperationProgress::default(),
            result: None,
            error: None,
            may_cancel: true,
        };
        let entry = Arc::new(Entry {
            op: Mutex::new(op.clone()),
            finished_at: Mutex::new(None),
            done: watch::channel(false).0,
            cancel: AtomicBool::new(false),
        });
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry.clone());
        let fut = work(OpHandle { entry: entry.clone() });
        tokio::spawn(async move {
            let outcome = fut.await;
            finish(&entry, outcome);
        });
        op
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>, ManagerError> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound(format!("No operation {id}")))
    }

    pub fn get(&self, id: &str) -> Result<Operation, ManagerError> {
        Ok(snapshot(self.entry(id)?.as_ref()))
    }

    pub fn list(&self) -> Vec<Operation> {
        self.purge();
        let mut ops: Vec<Operation> = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| snapshot(e))
            .collect();
        ops.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        ops
    }

    /// The operation once it has ended, or as it is after `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Operation, ManagerError> {
        let entry = self.entry(id)?;
        let mut rx = entry.done.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
        Ok(snapshot(&entry))
    }

    /// Ask a running operation to stop; it ends as `cancelled` at its next check. Decided under the
    /// operation's lock, so a cancel is never accepted after the work passed its point of no return.
    pub fn cancel(&self, id: &str) -> Result<Operation, ManagerError> {
        let entry = self.entry(id)?;
        let op = entry.op.lock().unwrap_or_else(|p| p.into_inner());
        if op.status.is_done() {
            return Err(ManagerError::Conflict(format!(
                "Operation {id} has already ended ({})",
                op.status
            )));
        }
        if !op.may_cancel {
            return Err(ManagerError::Conflict(format!(
                "Operation {id} ({}) can no longer be cancelled",
                op.description
            )));
        }
        entry.cancel.store(true, Ordering::Relaxed);
        Ok(op.clone())
    }

    /// Forget operations that ended long enough ago.
    fn purge(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, e| {
            e.finished_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|t| t.elapsed() < KEEP_FINISHED)
        });
    }
}

fn snapshot(entry: &Entry) -> Operation {
    entry.op.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn finish(entry: &Entry, outcome: OpResult) {
    {
        let mut op = entry.op.lock().unwrap_or_else(|p| p.into_inner());
        op.updated_at = vessel_runtime::clock::now_rfc3339();
        op.may_cancel = false;
        match outcome {
            Ok(result) => {
                op.status = OperationStatus::Success;
                op.result = result;
            }
            Err(ManagerError::Cancelled(e)) => {
                op.status = OperationStatus::Cancelled;
                op.error = Some(format!("Cancelled: {e}"));
            }
            Err(e) => {
                op.status = OperationStatus::Failure;
                op.error = Some(e.to_string());
            }
        }
    }
    *entry.finished_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    entry.done.send_replace(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_operation_reports_progress_ends_with_its_result_and_can_be_cancelled() {
        let ops = Operations::default();
        let op = ops.start("test", "ok".into(), vec![], |h| async move {
            h.stage("working");
            Ok(Some(serde_json::json!({"n": 1})))
        });
        let done = ops.wait(&op.id, Duration::from_secs(5)).await.unwrap();
        assert_eq!(done.status, OperationStatus::Success);
        assert_eq!(done.result.unwrap()["n"], 1);
        assert_eq!(done.progress.stage, "working");
        assert!(
            ops.cancel(&op.id).is_err(),
            "an ended operation cannot be cancelled"
        );

        let slow = ops.start("test", "slow".into(), vec![], |h| async move {
            while !h.cancelled() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(ManagerError::Cancelled("stopped".into()))
        });
        let still = ops.wait(&slow.id, Duration::from_millis(20)).await.unwrap();
        assert_eq!(
            still.status,
            OperationStatus::Running,
            "wait returns at its timeout"
        );
        ops.cancel(&slow.id).unwrap();
        let ended = ops.wait(&slow.id, Duration::from_secs(5)).await.unwrap();
        assert_eq!(ended.status, OperationStatus::Cancelled);
        assert!(ops.get("nope").is_err());
        assert_eq!(ops.list().len(), 2);

        // Past its point of no return a cancel is refused; a failure after a cancel is still a failure.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let committed = ops.start("test", "committed".into(), vec![], |h| async move {
            h.no_more_cancel()?;
            let _ = rx.await;
            Err(ManagerError::Internal("broke".into()))
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            ops.cancel(&committed.id).is_err(),
            "a cancel after no_more_cancel is refused"
        );
        let _ = tx.send(());
        let ended = ops.wait(&committed.id, Duration::from_secs(5)).await.unwrap();
        assert_eq!(ended.status, OperationStatus::Failure);
    }
}
