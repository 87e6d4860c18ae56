//! The PostgreSQL control database, shared by several replicas.

use sqlx::{PgPool, postgres::PgConnectOptions};

use super::{ActionRow, ControlStore, JailAction, StoreError, outcome, select_recent};

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

#[async_trait::async_trait]
impl ControlStore for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn record_action(&self, action: &JailAction) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO jail_actions (at, action, jail, ip, detail, outcome) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(action.at)
        .bind(action.action.as_str())
        .bind(&action.jail)
        .bind(&action.ip)
        .bind(&action.detail)
        .bind(outcome(action.ok))
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn recent_actions(&self, limit: u32) -> Result<Vec<JailAction>, StoreError> {
        let rows: Vec<ActionRow> =
            sqlx::query_as(select_recent!("$1")).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.into_iter().map(JailAction::try_from).collect()
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
