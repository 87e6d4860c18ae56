//! The control database: one repository trait per aggregate, each with a
//! SQLite and a PostgreSQL implementation written out by hand.
//!
//! | aggregate | trait | tables |
//! | --- | --- | --- |
//! | [`auth`] | [`AuthStore`] | `admin_password`, `setup_tokens`, `sessions`, `login_attempts` |
//! | [`settings`] | [`SettingsStore`] | `settings` |
//! | [`actions`] | [`ActionLog`] | `jail_actions` |
//! | [`lease`] | [`LeaseStore`], [`RunLedger`] | `leases`, `job_runs`, `job_requests` |
//! | [`history`] | [`HistoryStore`] | `ban_history`, `history_cursors` |
//!
//! Each aggregate is a folder: `mod.rs` holds its trait and what both
//! backends share (row types, conversions, statements that are the same in
//! both dialects), `sqlite.rs` and `postgres.rs` its two implementations. A
//! statement is written twice only where the dialects differ (the
//! database's clock, row locks). One pool per backend, [`SqliteStore`] (the
//! default, one replica) and [`PgStore`] (several replicas), implements
//! every trait; [`connect`] hands out the pool once per trait in
//! [`Stores`], so each component is given only the one it needs.
//! Migrations are per backend under `migrations/control/`; each aggregate
//! has a contract suite run on both backends.

pub mod actions;
pub mod auth;
pub mod history;
pub mod lease;
pub mod postgres;
pub mod settings;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use bangui_runtime::db::Backend;

pub use self::{
    actions::ActionLog, auth::AuthStore, history::HistoryStore, lease::LeaseStore, lease::RunLedger, postgres::PgStore,
    settings::SettingsStore, sqlite::SqliteStore,
};
/// Errors of the store (shared with the other service).
pub use crate::error::StoreError;

/// The database as a whole: what health and shutdown need.
#[async_trait::async_trait]
pub trait Pool: Send + Sync + std::fmt::Debug {
    /// A round trip, for health.
    async fn ping(&self) -> Result<(), StoreError>;
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    /// Closes the pool.
    async fn close(&self);
}

/// One backend, seen through each repository trait.
pub trait ControlDb: Pool + AuthStore + SettingsStore + ActionLog + LeaseStore + RunLedger + HistoryStore {}

impl<T> ControlDb for T where T: Pool + AuthStore + SettingsStore + ActionLog + LeaseStore + RunLedger + HistoryStore {}

/// The control database, once per repository trait (one pool behind all).
#[derive(Debug, Clone)]
pub struct Stores {
    pub pool: Arc<dyn Pool>,
    pub auth: Arc<dyn AuthStore>,
    pub settings: Arc<dyn SettingsStore>,
    pub actions: Arc<dyn ActionLog>,
    pub lease: Arc<dyn LeaseStore>,
    pub ledger: Arc<dyn RunLedger>,
    pub history: Arc<dyn HistoryStore>,
}

impl Stores {
    /// Every trait of `db`.
    pub fn of<T: ControlDb + 'static>(db: T) -> Self {
        let db = Arc::new(db);
        Self {
            pool: db.clone(),
            auth: db.clone(),
            settings: db.clone(),
            actions: db.clone(),
            lease: db.clone(),
            ledger: db.clone(),
            history: db,
        }
    }
}

/// Opens the store named by `url` and applies its migrations.
pub async fn connect(url: &str) -> Result<Stores, StoreError> {
    Ok(match Backend::of(url)? {
        Backend::Sqlite => Stores::of(SqliteStore::connect(url).await?),
        Backend::Postgres => Stores::of(PgStore::connect(url).await?),
    })
}
