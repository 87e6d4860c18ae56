//! The PostgreSQL cache store, for several geo-service replicas sharing one
//! cache, and PostgreSQL's side of `GeoDialect`.

use sqlx::{Postgres, postgres::PgConnectOptions};

use super::{GeoDialect, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/geo/postgres");

/// The cache in PostgreSQL.
pub type PgStore = Store<Postgres>;

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

impl GeoDialect for Postgres {
    /// `max` is only an aggregate in PostgreSQL.
    const GREATEST: &'static str = "GREATEST";
}
