//! The control database.
//!
//! One repository trait, [`ControlStore`], with a SQLite ([`sqlite`], the
//! default, one replica) and a PostgreSQL ([`postgres`], several replicas)
//! implementation, migrations per backend under `migrations/control/`, and
//! one contract suite run against both. Today it holds the log of changes
//! made to fail2ban through this service (`jail_actions`).

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use bangui_runtime::db::Backend;

/// What was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Ban,
    Unban,
    Start,
    Stop,
    Idle,
    Params,
    IgnoreAdd,
    IgnoreRemove,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Ban => "ban",
            ActionKind::Unban => "unban",
            ActionKind::Start => "start",
            ActionKind::Stop => "stop",
            ActionKind::Idle => "idle",
            ActionKind::Params => "params",
            ActionKind::IgnoreAdd => "ignore_add",
            ActionKind::IgnoreRemove => "ignore_remove",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "ban" => ActionKind::Ban,
            "unban" => ActionKind::Unban,
            "start" => ActionKind::Start,
            "stop" => ActionKind::Stop,
            "idle" => ActionKind::Idle,
            "params" => ActionKind::Params,
            "ignore_add" => ActionKind::IgnoreAdd,
            "ignore_remove" => ActionKind::IgnoreRemove,
            other => return Err(StoreError::Corrupt(format!("unknown action {other:?}"))),
        })
    }
}

/// One change made to fail2ban through this service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailAction {
    /// Unix seconds.
    pub at: i64,
    pub action: ActionKind,
    /// `None`: every jail.
    pub jail: Option<String>,
    pub ip: Option<String>,
    /// What was set, or why fail2ban refused.
    pub detail: String,
    /// fail2ban accepted it.
    pub ok: bool,
}

/// Errors of the store (shared with the other service).
pub use bangui_runtime::db::StoreError;

/// The control database's operations.
#[async_trait::async_trait]
pub trait ControlStore: Send + Sync + std::fmt::Debug {
    /// A round trip, for health.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Appends one change; returns its id.
    async fn record_action(&self, action: &JailAction) -> Result<i64, StoreError>;
    /// The latest `limit` changes, newest first.
    async fn recent_actions(&self, limit: u32) -> Result<Vec<JailAction>, StoreError>;
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    /// Closes the pool.
    async fn close(&self);
}

/// Opens the store named by `url` and applies its migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn ControlStore>, StoreError> {
    Ok(match Backend::of(url)? {
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::connect(url).await?),
        Backend::Postgres => Arc::new(postgres::PgStore::connect(url).await?),
    })
}

/// `SELECT` of every `jail_actions` column, newest first; both backends
/// bind the limit as their first parameter.
macro_rules! select_recent {
    ($param:literal) => {
        concat!("SELECT at, action, jail, ip, detail, outcome FROM jail_actions ORDER BY id DESC LIMIT ", $param)
    };
}
pub(crate) use select_recent;

/// A `jail_actions` row as both backends return it.
#[derive(Debug, sqlx::FromRow)]
struct ActionRow {
    at: i64,
    action: String,
    jail: Option<String>,
    ip: Option<String>,
    detail: String,
    outcome: String,
}

impl TryFrom<ActionRow> for JailAction {
    type Error = StoreError;

    fn try_from(row: ActionRow) -> Result<Self, StoreError> {
        let ok = match row.outcome.as_str() {
            "ok" => true,
            "failed" => false,
            other => return Err(StoreError::Corrupt(format!("unknown outcome {other:?}"))),
        };
        Ok(JailAction {
            at: row.at,
            action: ActionKind::parse(&row.action)?,
            jail: row.jail,
            ip: row.ip,
            detail: row.detail,
            ok,
        })
    }
}

fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "failed" }
}

#[cfg(test)]
mod contract;
