//! The PostgreSQL control database, shared by several replicas, and
//! PostgreSQL's side of `Dialect`.

use std::{sync::LazyLock, time::Duration};

use sqlx::{
    Postgres,
    postgres::{PgConnectOptions, PgListener},
};
use tokio::sync::broadcast;

use super::{Dialect, Store, StoreError, hosts, lease::Statements};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/control/postgres");

/// The control database in PostgreSQL.
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

/// The database's clock in Unix milliseconds (`now()` is the transaction's
/// start).
const NOW_MS: &str = "(extract(epoch from now()) * 1000)::bigint";

/// A run's term check locks the lease row (FOR SHARE), so a new holder's
/// acquire waits until the run's row is committed.
static LEASE: LazyLock<Statements> = LazyLock::new(|| Statements::new(NOW_MS, " FOR SHARE"));
static HOSTS: LazyLock<hosts::Statements> = LazyLock::new(|| hosts::Statements::new(NOW_MS));

impl Dialect for Postgres {
    /// PostgreSQL takes 65 535 parameters a statement.
    const ROWS_PER_INSERT: usize = 500;

    /// Serializes the attempt reservations of one client key ($1) inside a
    /// transaction, on every replica: a transaction-scoped advisory lock in
    /// a namespace of its own (0x6c6f67 = "log"). Under READ COMMITTED two
    /// concurrent count-then-insert statements would otherwise both see the
    /// limit not reached.
    const LOCK_CLIENT: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7106407, hashtext($1))");

    /// Samples the table (at most 30 000 rows by default): tens of
    /// milliseconds, against seconds of full scans over the next import.
    const ANALYZE_ENTRIES: Option<&'static str> = Some("ANALYZE blocklist_listed");

    fn placeholder(n: usize) -> String {
        format!("${n}")
    }

    const NOTIFY: Option<&'static str> = Some("SELECT pg_notify($1, $2)");

    fn lease_statements() -> &'static Statements {
        &LEASE
    }

    fn host_statements() -> &'static hosts::Statements {
        &HOSTS
    }
}

/// Notifications from PostgreSQL (LISTEN), handed to every subscriber as
/// (channel, payload). They are only a wake-up: whoever waits on one also
/// polls, so a notification lost while the listening connection was
/// reconnecting delays, never loses, what it announced.
#[derive(Debug)]
pub struct Notices {
    sender: broadcast::Sender<(String, String)>,
}

/// Notifications a slow subscriber may fall behind by before it is told
/// it lagged (it then polls).
const NOTICES_KEPT: usize = 1024;

impl Notices {
    /// Listens on `channels` with a connection of its own, from now until
    /// `pool` closes, reconnecting after a second when the connection drops.
    pub fn start(store: &PgStore, channels: &'static [&'static str]) -> std::sync::Arc<Self> {
        let (sender, _) = broadcast::channel(NOTICES_KEPT);
        let notices = std::sync::Arc::new(Self { sender: sender.clone() });
        let pool = store.pool.clone();
        tokio::spawn(async move {
            while !pool.is_closed() {
                let listening = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen_all(channels.iter().copied()).await?;
                    loop {
                        let notice = listener.recv().await?;
                        // Nobody subscribed: nobody waits.
                        let _ = sender.send((notice.channel().to_owned(), notice.payload().to_owned()));
                    }
                };
                let ended: Result<(), sqlx::Error> = listening.await;
                if let Err(error) = ended
                    && !pool.is_closed()
                {
                    tracing::warn!(%error, "LISTEN connection lost: listening again in 1 s (waiters poll meanwhile)");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        notices
    }

    pub fn subscribe(&self) -> broadcast::Receiver<(String, String)> {
        self.sender.subscribe()
    }
}
