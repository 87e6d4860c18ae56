//! The control database: one repository trait per aggregate, each with one
//! implementation generic over the backend.
//!
//! | aggregate | trait | tables |
//! | --- | --- | --- |
//! | [`auth`] | [`AuthStore`] | `admin_password`, `setup_token`, `sessions`, `login_attempts` |
//! | [`settings`] | [`SettingsStore`] | `settings` |
//! | [`actions`] | [`ActionLog`] | `jail_actions` |
//! | [`lease`] | [`LeaseStore`], [`RunLedger`] | `leases`, `job_runs`, `job_requests` |
//! | [`history`] | [`HistoryStore`] | `ban_history`, `history_cursors` |
//! | [`blocklist`] | [`BlocklistStore`] | `blocklist_sources`, `blocklist_listed`, `blocklist_owned`, `blocklist_exceptions`, `blocklist_runs` |
//! | [`hosts`] | [`HostStore`] | `hosts`, `enrollment_tokens` |
//!
//! Each aggregate is a folder: `mod.rs` holds its trait, row types and
//! statements (the same text on both backends: numbered `$n` parameters,
//! which SQLite takes too), `sql.rs` its one implementation,
//! `impl<DB: Dialect> … for Store<DB>`, which binds and runs them.
//! `Dialect` (in `dialect.rs`) carries what that generic code needs of a
//! backend and what really differs between the two: the database's clock
//! and row lock in the lease statements, the advisory lock before an
//! attempt reservation, rows per archive insert, the statistics refresh
//! after a large blocklist import. Each backend's side of it
//! is in `sqlite.rs` and `postgres.rs`, next to its migrations and pool.
//! One pool per backend, [`SqliteStore`] (the default, one replica) and
//! [`PgStore`] (several replicas), implements every trait; [`connect`]
//! hands out the pool once per trait in [`Stores`], so each component is
//! given only the one it needs.
//! Migrations are per backend under `migrations/control/`; each aggregate
//! has a contract suite run on both backends.

pub mod actions;
pub mod auth;
pub mod blocklist;
mod dialect;
pub mod history;
pub mod hosts;
pub mod lease;
pub mod postgres;
pub mod settings;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use bangui_runtime::db::Backend;
pub(crate) use bangui_runtime::sql::{Stmt, conn};
use sqlx::Database;

pub(crate) use self::dialect::Dialect;
pub use self::{
    actions::ActionLog, auth::AuthStore, blocklist::BlocklistStore, history::HistoryStore, hosts::HostStore,
    lease::LeaseStore, lease::RunLedger, postgres::PgStore, settings::SettingsStore, sqlite::SqliteStore,
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

/// The control database on backend `DB`: one pool; every repository
/// trait is implemented for it once, generic over `Dialect`.
#[derive(Debug)]
pub struct Store<DB: Database> {
    pub(in crate::store) pool: sqlx::Pool<DB>,
}

impl<DB: Database> Clone for Store<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone() }
    }
}

#[async_trait::async_trait]
impl<DB: Dialect> Pool for Store<DB> {
    async fn ping(&self) -> Result<(), StoreError> {
        Stmt::<DB>::new("SELECT 1").execute(&mut *conn(&self.pool).await?).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// One backend, seen through each repository trait.
pub trait ControlDb:
    Pool + AuthStore + SettingsStore + ActionLog + LeaseStore + RunLedger + HistoryStore + BlocklistStore + HostStore
{
}

impl<T> ControlDb for T where
    T: Pool
        + AuthStore
        + SettingsStore
        + ActionLog
        + LeaseStore
        + RunLedger
        + HistoryStore
        + BlocklistStore
        + HostStore
{
}

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
    pub blocklists: Arc<dyn BlocklistStore>,
    pub hosts: Arc<dyn HostStore>,
    /// PostgreSQL's notifications (several replicas); `None` on SQLite.
    pub notices: Option<Arc<postgres::Notices>>,
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
            history: db.clone(),
            blocklists: db.clone(),
            hosts: db,
            notices: None,
        }
    }
}

/// Opens the store named by `url` and applies its migrations.
pub async fn connect(url: &str) -> Result<Stores, StoreError> {
    Ok(match Backend::of(url)? {
        Backend::Sqlite => Stores::of(SqliteStore::connect(url).await?),
        Backend::Postgres => {
            let store = PgStore::connect(url).await?;
            let notices = postgres::Notices::start(&store, &[hosts::COMMANDS_CHANNEL, hosts::RESULTS_CHANNEL]);
            Stores { notices: Some(notices), ..Stores::of(store) }
        }
    })
}
