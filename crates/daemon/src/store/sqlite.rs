//! [`InstanceStore`] on SQLite in WAL mode: a crash (kill -9, power loss) leaves the last committed
//! transaction.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};
use vessel_api::{Instance, InstanceConfig, InstanceState, Kind};

use super::schema::{self, MigrateError};
use super::{InstanceStore, Record, StoreError, SupervisorRef};

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const COLUMNS: &str =
    "id, name, kind, image, image_id, created_at, config, state, supervisor_pid, supervisor_start";

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let open_err = |source| StoreError::Open {
            path: shown.clone(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // WAL with synchronous=FULL: a committed transaction survives power loss, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // Attachments go with their instance (ON DELETE CASCADE), and a network in use cannot go.
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        match schema::migrate(&mut conn) {
            Ok(_) => {}
            Err(MigrateError::TooNew(found)) => {
                return Err(StoreError::TooNew {
                    path: shown,
                    found,
                    known: schema::latest(),
                })
            }
            Err(MigrateError::Sql(e)) => return Err(open_err(e)),
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (it has its own transactions).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn from_row(row: &Row) -> rusqlite::Result<Result<Record, StoreError>> {
    let id: String = row.get(0)?;
    let kind: String = row.get(2)?;
    let config: String = row.get(6)?;
    let state: String = row.get(7)?;
    let sup_pid: Option<i32> = row.get(8)?;
    let sup_start: Option<i64> = row.get(9)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.clone(),
        reason,
    };
    let kind = match kind.as_str() {
        "container" => Kind::Container,
        "vm" => Kind::Vm,
        other => return Ok(Err(corrupt(format!("unknown kind {other:?}")))),
    };
    let config: InstanceConfig = match serde_json::from_str(&config) {
        Ok(c) => c,
        Err(e) => return Ok(Err(corrupt(format!("config: {e}")))),
    };
    let state: InstanceState = match serde_json::from_str(&state) {
        Ok(s) => s,
        Err(e) => return Ok(Err(corrupt(format!("state: {e}")))),
    };
    Ok(Ok(Record {
        instance: Instance {
            id: id.clone(),
            name: row.get(1)?,
            kind,
            image: row.get(3)?,
            image_id: row.get(4)?,
            created_at: row.get(5)?,
            config,
            state,
            networks: Vec::new(),
        },
        supervisor: sup_pid.map(|pid| SupervisorRef {
            pid,
            start_time: sup_start.unwrap_or(0) as u64,
        }),
    }))
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(super) fn unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn changed(n: usize, id: &str) -> Result<(), StoreError> {
    if n == 0 {
        Err(StoreError::NotFound(id.into()))
    } else {
        Ok(())
    }
}

impl InstanceStore for SqliteStore {
    fn insert(&self, r: &Record) -> Result<(), StoreError> {
        let i = &r.instance;
        let res = self.conn().execute(
            &format!("INSERT INTO instances ({COLUMNS}, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                i.id,
                i.name,
                i.kind.to_string(),
                i.image,
                i.image_id,
                i.created_at,
                json(&i.config),
                json(&i.state),
                r.supervisor.map(|s| s.pid),
                r.supervisor.map(|s| s.start_time as i64),
                i.state.status.as_str(),
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(e) if unique_violation(&e) => Err(StoreError::NameTaken(i.name.clone())),
            Err(e) => Err(e.into()),
        }
    }

    fn get(&self, id: &str) -> Result<Record, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(id.into()))?
    }

    fn find(&self, name_or_id: &str) -> Result<Record, StoreError> {
        let conn = self.conn();
        let exact = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM instances WHERE name = ?1 OR id = ?1"),
                [name_or_id],
                from_row,
            )
            .optional()?;
        if let Some(r) = exact {
            return r;
        }
        let is_hex = !name_or_id.is_empty() && name_or_id.chars().all(|c| c.is_ascii_hexdigit());
        if !is_hex {
            return Err(StoreError::NotFound(name_or_id.into()));
        }
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM instances WHERE substr(id, 1, ?2) = ?1 LIMIT 2"
        ))?;
        let mut found: Vec<Result<Record, StoreError>> = stmt
            .query_map(params![name_or_id, name_or_id.len() as i64], from_row)?
            .collect::<Result<_, _>>()?;
        match found.len() {
            0 => Err(StoreError::NotFound(name_or_id.into())),
            1 => found.remove(0),
            _ => Err(StoreError::Ambiguous(name_or_id.into())),
        }
    }

    fn list(&self) -> Result<Vec<Record>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM instances ORDER BY created_at, id"
        ))?;
        let rows: Vec<Result<Record, StoreError>> =
            stmt.query_map([], from_row)?.collect::<Result<_, _>>()?;
        rows.into_iter().collect()
    }

    fn set_state(
        &self,
        id: &str,
        state: &InstanceState,
        supervisor: Option<SupervisorRef>,
    ) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE instances SET state = ?2, status = ?3, supervisor_pid = ?4, supervisor_start = ?5 WHERE id = ?1",
            params![
                id,
                json(state),
                state.status.as_str(),
                supervisor.map(|s| s.pid),
                supervisor.map(|s| s.start_time as i64)
            ],
        )?;
        changed(n, id)
    }

    fn set_config(&self, id: &str, config: &InstanceConfig) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE instances SET config = ?2 WHERE id = ?1",
            params![id, json(config)],
        )?;
        changed(n, id)
    }

    fn rename(&self, id: &str, name: &str) -> Result<(), StoreError> {
        match self
            .conn()
            .execute("UPDATE instances SET name = ?2 WHERE id = ?1", params![id, name])
        {
            Ok(n) => changed(n, id),
            Err(e) if unique_violation(&e) => Err(StoreError::NameTaken(name.into())),
            Err(e) => Err(e.into()),
        }
    }

    fn delete(&self, id: &str) -> Result<(), StoreError> {
        let n = self.conn().execute("DELETE FROM instances WHERE id = ?1", [id])?;
        changed(n, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_api::Status;

    fn record(id: &str, name: &str) -> Record {
        Record {
            instance: Instance {
                id: id.into(),
                name: name.into(),
                kind: Kind::Container,
                image: "busybox".into(),
                image_id: "sha256:00".into(),
                created_at: "2026-12-07T00:00:00.000000000Z".into(),
                config: InstanceConfig {
                    image: "busybox".into(),
                    ..Default::default()
                },
                state: InstanceState {
                    status: Status::Created,
                    pid: None,
                    exit_code: None,
                    oom_killed: false,
                    started_at: None,
                    finished_at: None,
                    restart_count: 0,
                    stopped_by_user: false,
                    idmap: None,
                },
                networks: Vec::new(),
            },
            supervisor: None,
        }
    }

    fn temp_store(tag: &str) -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("vessel-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (SqliteStore::open(&dir.join("db")).unwrap(), dir)
    }

    #[test]
    fn names_are_unique_and_ids_resolve_by_prefix() {
        let (s, dir) = temp_store("names");
        s.insert(&record("abc123", "web")).unwrap();
        s.insert(&record("abd456", "db")).unwrap();
        assert!(matches!(s.insert(&record("ffff", "web")), Err(StoreError::NameTaken(n)) if n == "web"));
        assert_eq!(s.find("web").unwrap().instance.id, "abc123");
        assert_eq!(s.find("abc").unwrap().instance.name, "web");
        assert!(matches!(s.find("ab"), Err(StoreError::Ambiguous(_))));
        assert!(matches!(s.find("zz"), Err(StoreError::NotFound(_))));
        assert!(matches!(s.rename("abd456", "web"), Err(StoreError::NameTaken(_))));
        s.rename("abd456", "db2").unwrap();
        assert_eq!(s.list().unwrap().len(), 2);
        s.delete("abc123").unwrap();
        assert!(matches!(s.get("abc123"), Err(StoreError::NotFound(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn state_and_supervisor_survive_a_reopen_and_a_newer_schema_is_refused() {
        let (s, dir) = temp_store("reopen");
        s.insert(&record("a1", "x")).unwrap();
        let mut st = s.get("a1").unwrap().instance.state;
        st.status = Status::Running;
        st.pid = Some(42);
        let sup = SupervisorRef {
            pid: 7,
            start_time: 99,
        };
        s.set_state("a1", &st, Some(sup)).unwrap();
        drop(s);
        let s = SqliteStore::open(&dir.join("db")).unwrap();
        let r = s.get("a1").unwrap();
        assert_eq!(r.instance.state.pid, Some(42));
        assert_eq!(r.supervisor, Some(sup));
        s.conn().pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        assert!(matches!(
            SqliteStore::open(&dir.join("db")),
            Err(StoreError::TooNew { found: 99, .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
