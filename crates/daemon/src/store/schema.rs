//! The store's schema and its migrations: `PRAGMA user_version` is the number of migrations applied; each
//! new version appends one, applied in a transaction with the version bump.

use rusqlite::Connection;

/// Migration N brings the schema from version N to N + 1.
const MIGRATIONS: &[&str] = &[
    // 1: instances. `state` is the JSON of vessel_api::InstanceState; `status` repeats its status for queries.
    "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        image TEXT NOT NULL,
        image_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        config TEXT NOT NULL,
        state TEXT NOT NULL,
        status TEXT NOT NULL,
        supervisor_pid INTEGER,
        supervisor_start INTEGER
    );",
    // 2: networks and attachments. An address is unique per network by constraint, and an instance's
    // attachments go with its row (ON DELETE CASCADE), so allocating or releasing one is part of the
    // transaction that attaches, detaches or deletes. `spec` is the JSON of vessel_api::Network.
    "CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        spec TEXT NOT NULL
    );
    CREATE TABLE attachments (
        instance_id TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        network_id TEXT NOT NULL REFERENCES networks(id),
        seq INTEGER NOT NULL,
        ifname TEXT NOT NULL,
        host_ifname TEXT NOT NULL UNIQUE,
        mac TEXT NOT NULL,
        ip4 TEXT,
        ip6 TEXT,
        aliases TEXT NOT NULL,
        PRIMARY KEY (instance_id, network_id),
        UNIQUE (network_id, ip4),
        UNIQUE (network_id, ip6),
        UNIQUE (network_id, mac),
        UNIQUE (instance_id, ifname)
    );",
];

pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Bring the schema up to date; returns the version found before.
pub fn migrate(conn: &mut Connection) -> Result<i64, MigrateError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > latest() {
        return Err(MigrateError::TooNew(found));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n as i64 + 1)?;
        tx.commit()?;
    }
    Ok(found)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("schema version {0} is newer than this vesseld knows")]
    TooNew(i64),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}
