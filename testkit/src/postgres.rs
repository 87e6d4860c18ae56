//! A PostgreSQL schema of its own per test, in the test database, dropped
//! when the value goes. The server is `BANGUI_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test` (trust auth on the CI machine).

use std::{
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use sqlx::{Connection, Executor, postgres::PgConnectOptions};

/// The test server's URL.
pub fn postgres_url() -> String {
    std::env::var("BANGUI_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema that lives as long as the value.
#[derive(Debug)]
pub struct PgSchema {
    pub name: String,
}

impl PgSchema {
    /// Creates `<prefix>_<unique>`. Panics if PostgreSQL cannot be reached:
    /// the suite needs it.
    pub async fn create(prefix: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let unique =
            (u64::from(std::process::id()) << 32) ^ (u64::from(nanos) << 8) ^ NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{unique:016x}");
        let mut conn = sqlx::PgConnection::connect(&postgres_url())
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {}: {e}", postgres_url()));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .await
            .unwrap_or_else(|e| panic!("CREATE SCHEMA {name}: {e}"));
        Self { name }
    }

    /// Connection options whose sessions use this schema.
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&postgres_url())
            .unwrap_or_else(|e| panic!("BANGUI_TEST_POSTGRES_URL: {e}"))
            .options([("search_path", self.name.as_str())])
    }

    /// A URL whose connections use this schema, for a service's flags.
    pub fn url(&self) -> String {
        let base = postgres_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime: clean up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_url()).await {
                    let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE"))).await;
                }
            });
        })
        .join();
    }
}
