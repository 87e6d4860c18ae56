//! The PostgreSQL control database, shared by several replicas.

use sqlx::{PgPool, postgres::PgConnectOptions};

use super::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/control/postgres");

/// The control database in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and migrates.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = bangui_runtime::db::pg_pool_from_url(url).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Connects with explicit options (tests set a `search_path`).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = bangui_runtime::db::pg_pool(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

// Reservations of one client key wait for each other (a transaction-scoped
// advisory lock in a namespace of its own, 0x6c6f67 = "log"), on every
// replica: under READ COMMITTED two concurrent count-then-insert statements
// would otherwise both see the limit not reached.
super::shared::impl_control_store!(
    PgStore,
    "postgres",
    "(extract(epoch from now()) * 1000)::bigint",
    "FOR SHARE",
    "SELECT pg_advisory_xact_lock(7106407, hashtext($1))"
);

impl super::history::HasDb for PgStore {
    type Db = sqlx::Postgres;
}

super::history::impl_history_store!(PgStore, 500);
