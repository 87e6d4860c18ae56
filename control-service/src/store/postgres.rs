//! The PostgreSQL control database, shared by several replicas. Its
//! repositories are in each aggregate's `postgres.rs`.

use sqlx::{PgPool, postgres::PgConnectOptions};

use super::{Pool, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/control/postgres");

/// The control database in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(in crate::store) pool: PgPool,
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

#[async_trait::async_trait]
impl Pool for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
