//! vesseld's state store: the instance records, each change one transaction. Behind [`InstanceStore`], so
//! that cluster-wide records can later move to etcd while a host's own stay in SQLite ([`SqliteStore`]).

mod networks;
mod schema;
mod sqlite;

pub use networks::{AttachmentRecord, NetworkStore};
pub use sqlite::SqliteStore;

use vessel_api::{Instance, InstanceConfig, InstanceState};

/// The supervisor of a running instance, as recorded: its pid and start time (clock ticks since boot), so a
/// recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorRef {
    pub pid: i32,
    pub start_time: u64,
}

/// One instance as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub instance: Instance,
    pub supervisor: Option<SupervisorRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Cannot open the store {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("The store {path} has schema version {found}, newer than this vesseld knows ({known}): upgrade vesseld")]
    TooNew { path: String, found: i64, known: i64 },
    #[error("The name {0:?} is already in use")]
    NameTaken(String),
    #[error("No such instance: {0}")]
    NotFound(String),
    #[error("{0:?} names more than one instance: give more of the id")]
    Ambiguous(String),
    #[error("The store's record of {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    /// A request the store refuses as wrong (an address outside the subnet, ...).
    #[error("{0}")]
    Invalid(String),
    /// A request that clashes with what is stored (an address in use, a network in use, ...).
    #[error("{0}")]
    Conflict(String),
    #[error("Store error: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// The records vesseld keeps about instances. vesseld is the only writer; every method is one transaction.
pub trait InstanceStore: NetworkStore + Send + Sync {
    fn insert(&self, record: &Record) -> Result<(), StoreError>;
    fn get(&self, id: &str) -> Result<Record, StoreError>;
    /// By exact name, exact id, or unique id prefix (as docker resolves them).
    fn find(&self, name_or_id: &str) -> Result<Record, StoreError>;
    fn list(&self) -> Result<Vec<Record>, StoreError>;
    fn set_state(
        &self,
        id: &str,
        state: &InstanceState,
        supervisor: Option<SupervisorRef>,
    ) -> Result<(), StoreError>;
    fn set_config(&self, id: &str, config: &InstanceConfig) -> Result<(), StoreError>;
    fn rename(&self, id: &str, name: &str) -> Result<(), StoreError>;
    fn delete(&self, id: &str) -> Result<(), StoreError>;
}
