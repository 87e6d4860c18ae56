//! The control database.
//!
//! One repository trait, [`ControlStore`], with a SQLite ([`sqlite`], the
//! default, one replica) and a PostgreSQL ([`postgres`], several replicas)
//! implementation, migrations per backend under `migrations/control/`, and
//! one contract suite run against both. It holds the log of changes made to
//! fail2ban through this service (`jail_actions`), the master password,
//! sessions, login attempts and runtime settings.

pub mod history;
pub mod postgres;
mod shared;
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

/// A session as stored: the SHA-256 of its token, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub token_sha256: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The client address that logged in.
    pub client: String,
}

/// Failed logins in a window: how many, and when the oldest was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    pub count: u64,
    pub oldest: Option<i64>,
}

/// What [`ControlStore::reserve_attempt`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The attempt is counted (as a failure for now); its row id.
    Reserved(i64),
    /// The client is at its limit: nothing recorded.
    Refused(Failures),
}

/// A lease as stored. Times are Unix milliseconds of the database's clock;
/// `db_now` is that clock when the row was read.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub term: i64,
    pub acquired_at: i64,
    pub renewed_at: i64,
    pub expires_at: i64,
    pub db_now: i64,
}

/// What acquiring or renewing a lease gave: the term (new when the holder
/// changed), and the database's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseGrant {
    pub term: i64,
    pub acquired_at: i64,
    pub expires_at: i64,
    pub db_now: i64,
}

/// A run about to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun<'a> {
    pub job: &'a str,
    /// The slot (Unix ms): the cron time, or the request time of a manual run.
    pub scheduled_for: i64,
    /// The caller's term; the run starts only if it is still the lease's.
    pub term: i64,
    pub replica: &'a str,
    /// `schedule` or `manual`.
    pub trigger: &'a str,
    /// The lease that gates runs.
    pub lease: &'a str,
}

/// A row of the run ledger.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    pub scheduled_for: i64,
    pub term: i64,
    pub replica: String,
    pub trigger: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: String,
    pub error: Option<String>,
}

/// The run that answers a job's open "run now" requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedRun<'a> {
    pub job: &'a str,
    /// The caller's term; the run starts only if it is still the lease's.
    pub term: i64,
    pub replica: &'a str,
    /// The lease that gates runs.
    pub lease: &'a str,
}

/// A run started for "run now" requests: its ledger id and its slot (the
/// time of the latest request it answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedRun {
    pub id: i64,
    pub scheduled_for: i64,
}

/// The control database's operations (the archive's are in [`history::HistoryStore`]).
#[async_trait::async_trait]
pub trait ControlStore: history::HistoryStore + Send + Sync + std::fmt::Debug {
    /// The master password's PHC string, if one is set.
    async fn password(&self) -> Result<Option<String>, StoreError>;
    /// One transaction: consumes the setup token `token_sha256`, sets the
    /// password if none exists and deletes every setup token. False (and
    /// nothing changed) when the token is unknown or a password exists
    /// (concurrent callers: exactly one wins).
    async fn complete_setup(&self, phc: &str, at: i64, token_sha256: &[u8]) -> Result<bool, StoreError>;
    /// The SHA-256 of every live setup token (one per replica that made one).
    async fn setup_tokens(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Adds a setup token's SHA-256.
    async fn add_setup_token(&self, token_sha256: &[u8], at: i64) -> Result<(), StoreError>;
    /// Deletes every setup token (the password came from configuration).
    async fn clear_setup_tokens(&self) -> Result<(), StoreError>;
    /// One transaction: replaces the password if it is still `expected`
    /// (`None`: any), and deletes every session but `keep`. Returns false
    /// (and changes nothing) when the password changed meanwhile.
    async fn replace_password(
        &self,
        expected: Option<&str>,
        phc: &str,
        at: i64,
        keep: Option<&[u8]>,
    ) -> Result<bool, StoreError>;
    async fn insert_session(&self, session: &SessionRow) -> Result<(), StoreError>;
    async fn session(&self, token_sha256: &[u8]) -> Result<Option<SessionRow>, StoreError>;
    /// False when there was no such session.
    async fn delete_session(&self, token_sha256: &[u8]) -> Result<bool, StoreError>;
    /// Deletes sessions expired at `now`, and login attempts older than
    /// `attempts_before`; returns the sessions deleted.
    async fn delete_expired(&self, now: i64, attempts_before: i64) -> Result<u64, StoreError>;
    /// Counts an attempt of `client` before its password is checked: if
    /// `client` has fewer than `limit` failures at or after `since`, records
    /// one more (a failure until [`ControlStore::attempt_succeeded`]) and
    /// returns its id; else records nothing and returns the failures.
    /// Atomic per client: of concurrent callers (on PostgreSQL, on any
    /// replica) at most `limit` are reserved in a window.
    async fn reserve_attempt(&self, client: &str, at: i64, since: i64, limit: u32) -> Result<Reservation, StoreError>;
    /// The reserved attempt `id` had the right password.
    async fn attempt_succeeded(&self, id: i64) -> Result<(), StoreError>;
    /// Failed logins (and attempts still being checked) at or after
    /// `since`, of `client` or of everyone.
    async fn failures_since(&self, client: Option<&str>, since: i64) -> Result<Failures, StoreError>;
    /// Every stored runtime setting, as text.
    async fn settings(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// One transaction: upserts `values`.
    async fn put_settings(&self, values: &[(String, String)], at: i64) -> Result<(), StoreError>;
    /// A round trip, for health.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Appends one change; returns its id.
    async fn record_action(&self, action: &JailAction) -> Result<i64, StoreError>;
    /// The latest `limit` changes, newest first.
    async fn recent_actions(&self, limit: u32) -> Result<Vec<JailAction>, StoreError>;
    /// Acquires `name` for `holder`, or renews it, for `ttl_ms` of the
    /// database's clock: one statement, judged by that clock. `None` when
    /// another holder's lease has not expired. A change of holder (or a
    /// holder coming back after its lease expired) gets a larger term.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<LeaseGrant>, StoreError>;
    /// Ends `holder`'s lease now, if it still holds `term`; true if it did.
    async fn release_lease(&self, name: &str, holder: &str, term: i64) -> Result<bool, StoreError>;
    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError>;
    /// Inserts a run's ledger row, in one statement that also checks that
    /// `run.term` is still the lease's current, unexpired term. `None`: no
    /// row, no run (the slot already ran, or the term is stale).
    async fn start_run(&self, run: &NewRun<'_>) -> Result<Option<i64>, StoreError>;
    async fn finish_run(&self, id: i64, status: &str, error: Option<&str>) -> Result<(), StoreError>;
    /// The latest run of each job.
    async fn last_runs(&self) -> Result<Vec<JobRun>, StoreError>;
    /// Records a "run now" request; returns its id.
    async fn request_run(&self, job: &str, requested_by: &str) -> Result<i64, StoreError>;
    /// The jobs that have open "run now" requests.
    async fn requested_jobs(&self) -> Result<Vec<String>, StoreError>;
    /// One transaction: takes every open "run now" request of `run.job`
    /// (for `run.replica`) and inserts the ledger row of the one `manual`
    /// run that answers them all, slot = the latest request's time, under
    /// the same term check as [`ControlStore::start_run`]. `None`: no open
    /// request, or no row (the term is stale), and then nothing is taken:
    /// the requests wait for a replica that can run them. A request is
    /// taken if and only if a run after it is recorded.
    async fn start_requested_run(&self, run: &RequestedRun<'_>) -> Result<Option<StartedRun>, StoreError>;
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

/// A `sessions` row as both backends return it.
#[derive(Debug, sqlx::FromRow)]
struct SessionDbRow {
    token_sha256: Vec<u8>,
    created_at: i64,
    expires_at: i64,
    client: String,
}

impl From<SessionDbRow> for SessionRow {
    fn from(row: SessionDbRow) -> Self {
        SessionRow {
            token_sha256: row.token_sha256,
            created_at: row.created_at,
            expires_at: row.expires_at,
            client: row.client,
        }
    }
}

/// `(count, oldest)` of a failures query.
fn failures(row: (i64, Option<i64>)) -> Failures {
    Failures { count: u64::try_from(row.0).unwrap_or(0), oldest: row.1 }
}

fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "failed" }
}

#[cfg(test)]
mod contract;
#[cfg(test)]
mod history_contract;
