//! The master password, setup tokens, sessions and login attempts.
//!
//! Statements are the same on both backends (parameters `$1, $2, …`,
//! booleans bound, never spelled) except for how a client's attempt
//! reservations wait for each other (`Dialect::LOCK_CLIENT`); `sql.rs`
//! binds and runs them on either.

mod sql;

#[cfg(test)]
mod contract;

use super::StoreError;

/// A session as stored: the SHA-256 of its token, never the token.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub token_sha256: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The client address that logged in.
    pub client: String,
}

/// The setup token as stored: the token itself, so that every replica can
/// write the current one to its file (see the 0009 migration).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SetupTokenRow {
    pub token: String,
    pub created_at: i64,
    /// Valid until this time (exclusive).
    pub expires_at: i64,
}

impl std::fmt::Debug for SetupTokenRow {
    /// Without the token: a row in a log or a failed assertion keeps it private.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupTokenRow")
            .field("token", &"<hidden>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Failed logins in a window: how many, and when the oldest was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    pub count: u64,
    pub oldest: Option<i64>,
}

impl From<(i64, Option<i64>)> for Failures {
    /// `(count, oldest)` of a failures query.
    fn from((count, oldest): (i64, Option<i64>)) -> Self {
        Failures { count: u64::try_from(count).unwrap_or(0), oldest }
    }
}

/// What [`AuthStore::reserve_attempt`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The attempt is counted (as a failure for now); its row id.
    Reserved(i64),
    /// The client is at its limit: nothing recorded.
    Refused(Failures),
}

/// The password, setup tokens, sessions and login throttling.
#[async_trait::async_trait]
pub trait AuthStore: Send + Sync + std::fmt::Debug {
    /// The master password's PHC string, if one is set.
    async fn password(&self) -> Result<Option<String>, StoreError>;
    /// One transaction: consumes the setup token `token` if it is the
    /// current one and still valid at `at`, sets the password if none
    /// exists, and deletes the token. False (and nothing changed) when the
    /// token is not the current valid one or a password exists (concurrent
    /// callers: exactly one wins).
    async fn complete_setup(&self, phc: &str, at: i64, token: &str) -> Result<bool, StoreError>;
    /// The setup token, if there is one (expired or not).
    async fn setup_token(&self) -> Result<Option<SetupTokenRow>, StoreError>;
    /// One transaction: deletes the setup token if it expired at `now`,
    /// stores `candidate` if there is none and no password exists, and
    /// returns the one stored (none once a password exists). Of replicas
    /// that call it at once, one's candidate wins and all get it.
    async fn ensure_setup_token(
        &self,
        candidate: &SetupTokenRow,
        now: i64,
    ) -> Result<Option<SetupTokenRow>, StoreError>;
    /// Deletes the setup token (the password came from configuration).
    async fn clear_setup_token(&self) -> Result<(), StoreError>;
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
    /// one more (a failure until [`AuthStore::attempt_succeeded`]) and
    /// returns its id; else records nothing and returns the failures.
    /// Atomic per client: of concurrent callers (on PostgreSQL, on any
    /// replica) at most `limit` are reserved in a window.
    async fn reserve_attempt(&self, client: &str, at: i64, since: i64, limit: u32) -> Result<Reservation, StoreError>;
    /// The reserved attempt `id` had the right password.
    async fn attempt_succeeded(&self, id: i64) -> Result<(), StoreError>;
    /// Failed logins (and attempts still being checked) at or after
    /// `since`, of `client` or of everyone.
    async fn failures_since(&self, client: Option<&str>, since: i64) -> Result<Failures, StoreError>;
}

const SELECT_PASSWORD: &str = "SELECT phc FROM admin_password WHERE id = 1";
/// Sets the password ($1 phc, $2 at) unless one exists.
const INSERT_PASSWORD: &str =
    "INSERT INTO admin_password (id, phc, updated_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING";
/// Sets the password ($1 phc, $2 at) whatever it was.
const UPSERT_PASSWORD: &str = "INSERT INTO admin_password (id, phc, updated_at) VALUES (1, $1, $2) \
                               ON CONFLICT (id) DO UPDATE SET phc = excluded.phc, updated_at = excluded.updated_at";
/// Replaces the password ($1 phc, $2 at) if it is still $3.
const SWAP_PASSWORD: &str = "UPDATE admin_password SET phc = $1, updated_at = $2 WHERE id = 1 AND phc = $3";

const SELECT_SETUP_TOKEN: &str = "SELECT token, created_at, expires_at FROM setup_token WHERE id = 1";
/// Stores the token ($1 token, $2 created, $3 expires) unless there is one
/// or a password exists.
const INSERT_SETUP_TOKEN: &str = "INSERT INTO setup_token (id, token, created_at, expires_at) SELECT 1, $1, $2, $3 \
                                  WHERE NOT EXISTS (SELECT 1 FROM admin_password) ON CONFLICT (id) DO NOTHING";
/// Deletes the token if it expired at $1.
const DELETE_EXPIRED_SETUP_TOKEN: &str = "DELETE FROM setup_token WHERE id = 1 AND expires_at <= $1";
/// Consumes the token if it is $1 and still valid at $2.
const CONSUME_SETUP_TOKEN: &str = "DELETE FROM setup_token WHERE id = 1 AND token = $1 AND expires_at > $2";
const DELETE_SETUP_TOKEN: &str = "DELETE FROM setup_token";

const INSERT_SESSION: &str =
    "INSERT INTO sessions (token_sha256, created_at, expires_at, client) VALUES ($1, $2, $3, $4)";
const SELECT_SESSION: &str =
    "SELECT token_sha256, created_at, expires_at, client FROM sessions WHERE token_sha256 = $1";
const DELETE_SESSION: &str = "DELETE FROM sessions WHERE token_sha256 = $1";
const DELETE_SESSIONS_BUT: &str = "DELETE FROM sessions WHERE token_sha256 <> $1";
const DELETE_SESSIONS: &str = "DELETE FROM sessions";
const DELETE_EXPIRED_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= $1";
const DELETE_OLD_ATTEMPTS: &str = "DELETE FROM login_attempts WHERE at < $1";

/// One statement, so the count and the insert see the same rows: records
/// an attempt ($1 at, $2 client, $3 false) if client $4 has fewer than $7
/// attempts with success = $5 (false) at or after $6.
const RESERVE_ATTEMPT: &str = "INSERT INTO login_attempts (at, client, success) SELECT $1, $2, $3 \
     WHERE (SELECT count(*) FROM login_attempts WHERE client = $4 AND success = $5 AND at >= $6) < $7 \
     RETURNING id";
const ATTEMPT_SUCCEEDED: &str = "UPDATE login_attempts SET success = $1 WHERE id = $2";
/// (count, oldest) of attempts with success = $1 at or after $2 of client $3.
const CLIENT_FAILURES: &str =
    "SELECT count(*), min(at) FROM login_attempts WHERE success = $1 AND at >= $2 AND client = $3";
/// (count, oldest) of attempts with success = $1 at or after $2.
const ALL_FAILURES: &str = "SELECT count(*), min(at) FROM login_attempts WHERE success = $1 AND at >= $2";
