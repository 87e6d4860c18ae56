//! The log of changes made to fail2ban through this service
//! (`jail_actions`). The same statements on both backends, bound and run
//! once in `sql.rs`.

mod sql;

#[cfg(test)]
mod contract;

use super::StoreError;
use crate::kinds::ActionKind;

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

/// The append-only log of jail actions.
#[async_trait::async_trait]
pub trait ActionLog: Send + Sync + std::fmt::Debug {
    /// Appends one change; returns its id.
    async fn record_action(&self, action: &JailAction) -> Result<i64, StoreError>;
    /// The latest `limit` changes, newest first.
    async fn recent_actions(&self, limit: u32) -> Result<Vec<JailAction>, StoreError>;
}

/// Appends ($1 at, $2 action, $3 jail, $4 ip, $5 detail, $6 outcome).
const INSERT_ACTION: &str =
    "INSERT INTO jail_actions (at, action, jail, ip, detail, outcome) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
/// The latest $1 rows, newest first.
const SELECT_RECENT: &str = "SELECT at, action, jail, ip, detail, outcome FROM jail_actions ORDER BY id DESC LIMIT $1";

/// A `jail_actions` row as both backends return it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ActionRow {
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
        let action = row.action.parse().map_err(|_| StoreError::Corrupt(format!("unknown action {:?}", row.action)))?;
        Ok(JailAction { at: row.at, action, jail: row.jail, ip: row.ip, detail: row.detail, ok })
    }
}

/// The `outcome` column of a change.
fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "failed" }
}
