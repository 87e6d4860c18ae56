//! The fleet's hosts and their enrollment tokens: who may connect, and
//! which stream (on which replica) is each host's one live stream.
//!
//! Every statement that decides something is one statement judged by the
//! **database's** clock, so replicas with drifting clocks agree: a token is
//! used by the one UPDATE that finds it unused and unexpired (two
//! concurrent uses: one row changes, once); a stream lease is taken by the
//! one UPDATE that finds it free, stale, or held by the same agent process.
//! The statements are written once with a `{now}` hole that each backend
//! fills in ([`Statements::new`], handed out by `Dialect::host_statements`).

mod sql;

#[cfg(test)]
mod contract;

use super::StoreError;

/// A host as stored (never its credential). Times are Unix milliseconds of
/// the database's clock; `db_now` is that clock when the row was read.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HostRow {
    pub id: String,
    pub name: String,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    pub agent_version: String,
    pub fail2ban_version: String,
    /// The jail names, as a JSON array of strings.
    pub jails: String,
    pub revoked_at: Option<i64>,
    /// The replica holding the host's stream lease (maybe stale: see
    /// `stream_seen_at`).
    pub stream_holder: Option<String>,
    pub stream_seen_at: Option<i64>,
    /// The jails' counters the agent last pushed (JSON array), when it read
    /// them, and its outbox backlog.
    pub jail_states: String,
    pub states_at: Option<i64>,
    pub outbox_backlog: i64,
    pub db_now: i64,
}

/// A host about to be enrolled.
#[derive(Debug, Clone, Copy)]
pub struct NewHost<'a> {
    pub id: &'a str,
    /// The names to try, in order (the one asked for, then with
    /// suffixes); the first free one is the host's.
    pub names: &'a [String],
    /// SHA-256 of its credential.
    pub credential_hash: &'a [u8],
}

/// What an enrollment came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrollment {
    /// The host, with the name it got; the token is used.
    Enrolled(Box<HostRow>),
    /// The token is unknown, used or expired (nothing written).
    TokenRefused,
    /// A host with this id exists (nothing written, the token stays unused).
    IdTaken,
    /// Every name in `names` was taken (nothing written).
    NameTaken,
}

/// What a rename came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rename {
    Renamed(Box<HostRow>),
    NotFound,
    NameTaken,
}

/// What an agent says of its host, at hello and at each heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct Presence<'a> {
    pub agent_version: &'a str,
    pub fail2ban_version: &'a str,
    /// JSON array of jail names.
    pub jails: &'a str,
    /// JSON array of the jails' counters.
    pub jail_states: &'a str,
    /// How old the counters are, in ms (`None`: there are none).
    pub states_age_ms: Option<i64>,
    pub outbox_backlog: i64,
}

/// One stream asking for (or holding) a host's lease.
#[derive(Debug, Clone, Copy)]
pub struct StreamClaim<'a> {
    pub host: &'a str,
    /// Unique per Attach: only this stream refreshes or releases the lease.
    pub stream_id: &'a str,
    /// The replica serving the stream.
    pub replica: &'a str,
    /// The agent process: the same one reconnecting takes the lease over.
    pub instance: &'a str,
}

/// A command row for a host whose stream is on another replica.
#[derive(Debug, Clone, Copy)]
pub struct NewCommand<'a> {
    pub id: &'a str,
    pub host: &'a str,
    /// JSON of the operation (`bangui_fail2ban::command::Command`).
    pub operation: &'a str,
    /// Milliseconds from now (the database's clock) until its deadline.
    pub ttl_ms: i64,
}

/// A command row taken by the replica holding its host's stream.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TakenCommand {
    pub id: String,
    pub host_id: String,
    pub operation: String,
    /// Milliseconds left until its deadline (the database's clock).
    pub left_ms: i64,
}

/// The fleet's hosts and enrollment tokens.
#[async_trait::async_trait]
pub trait HostStore: Send + Sync + std::fmt::Debug {
    /// Stores a token's hash, valid for `ttl_ms`; returns when it expires.
    async fn insert_enrollment_token(&self, token_hash: &[u8], ttl_ms: i64) -> Result<i64, StoreError>;
    /// One transaction: uses the token (unused, unexpired: one UPDATE, so
    /// concurrent uses enroll once) and inserts the host.
    async fn enroll(&self, token_hash: &[u8], host: &NewHost<'_>) -> Result<Enrollment, StoreError>;
    /// Every host, by name.
    async fn hosts(&self) -> Result<Vec<HostRow>, StoreError>;
    async fn host(&self, id: &str) -> Result<Option<HostRow>, StoreError>;
    /// A host's credential hash and whether it is revoked (`None`: no host).
    async fn credential(&self, id: &str) -> Result<Option<(Vec<u8>, Option<i64>)>, StoreError>;
    async fn rename_host(&self, id: &str, name: &str) -> Result<Rename, StoreError>;
    /// Sets `revoked_at` (once) and drops the host's stream lease.
    async fn revoke_host(&self, id: &str) -> Result<Option<HostRow>, StoreError>;
    /// Takes the host's stream lease for `claim` when it is free, stale
    /// (no refresh within `stale_ms`), or held by the same agent instance,
    /// and records `presence`; false when another stream holds it or the
    /// host is revoked.
    async fn take_stream(
        &self,
        claim: &StreamClaim<'_>,
        presence: &Presence<'_>,
        stale_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Refreshes the lease `stream_id` holds and records `presence`; false
    /// when the stream no longer holds it (taken over, or the host revoked).
    async fn refresh_stream(&self, host: &str, stream_id: &str, presence: &Presence<'_>) -> Result<bool, StoreError>;
    /// Releases the lease if `stream_id` still holds it.
    async fn release_stream(&self, host: &str, stream_id: &str) -> Result<bool, StoreError>;

    // Commands across replicas (`host_commands`).

    /// Writes a command row, and wakes the replicas where the database can
    /// (NOTIFY `bangui_host_commands` with the host id).
    async fn insert_command(&self, command: &NewCommand<'_>) -> Result<(), StoreError>;
    /// The hosts with a command nobody took yet, before its deadline.
    async fn hosts_with_commands(&self) -> Result<Vec<String>, StoreError>;
    /// Takes `host`'s commands not taken yet, before their deadline, for
    /// `replica` (one UPDATE: a row is taken once).
    async fn take_commands(&self, host: &str, replica: &str) -> Result<Vec<TakenCommand>, StoreError>;
    /// Gives a taken command back, unsent (the stream that was to carry it
    /// ended first), so the replica holding `host`'s next stream takes it;
    /// wakes the replicas. False when it has an outcome or is gone.
    async fn return_command(&self, id: &str, host: &str) -> Result<bool, StoreError>;
    /// Writes a taken command's outcome (once) and wakes its caller
    /// (NOTIFY `bangui_host_results` with the command id); false when the
    /// row is gone (its caller gave up) or has an outcome.
    async fn finish_command(&self, id: &str, outcome: &str) -> Result<bool, StoreError>;
    /// The command's outcome, once there is one.
    async fn command_outcome(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// Deletes the row (its caller read the outcome, or gave up).
    async fn delete_command(&self, id: &str) -> Result<(), StoreError>;
    /// Deletes rows whose deadline passed more than `after_ms` ago (their
    /// callers crashed before deleting them); how many.
    async fn purge_commands(&self, after_ms: i64) -> Result<u64, StoreError>;
}

/// Where a command row wakes the replicas.
pub const COMMANDS_CHANNEL: &str = "bangui_host_commands";
/// Where an outcome wakes the command's caller.
pub const RESULTS_CHANNEL: &str = "bangui_host_results";

const HOST_COLUMNS: &str = "id, name, enrolled_at, last_seen, agent_version, fail2ban_version, jails, revoked_at, \
                            stream_holder, stream_seen_at, jail_states, states_at, outbox_backlog";

// The statements. `{now}` is the database's clock (see `Statements`),
// `{columns}` a host row's columns.

/// Stores token hash $1, valid for $2 ms.
const INSERT_TOKEN: &str = "INSERT INTO enrollment_tokens (token_hash, created_at, expires_at) VALUES ($1, {now}, {now} + $2) RETURNING expires_at";
/// Uses token $1 for host $2: the one statement that decides.
const USE_TOKEN: &str = "UPDATE enrollment_tokens SET used_at = {now}, used_by = $2 \
                         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > {now}";
/// Inserts host $1 named $2 with credential hash $3 unless the id or the name is taken.
const INSERT_HOST: &str = "INSERT INTO hosts (id, name, credential_hash, enrolled_at) VALUES ($1, $2, $3, {now}) \
                           ON CONFLICT DO NOTHING";
const HOST_EXISTS: &str = "SELECT count(*) FROM hosts WHERE id = $1";
const SELECT_HOSTS: &str = "SELECT {columns}, {now} AS db_now FROM hosts ORDER BY name";
const SELECT_HOST: &str = "SELECT {columns}, {now} AS db_now FROM hosts WHERE id = $1";
const SELECT_CREDENTIAL: &str = "SELECT credential_hash, revoked_at FROM hosts WHERE id = $1";
const RENAME_HOST: &str = "UPDATE hosts SET name = $2 WHERE id = $1";
const REVOKE_HOST: &str = "UPDATE hosts SET revoked_at = COALESCE(revoked_at, {now}), stream_id = NULL, \
                           stream_holder = NULL, stream_instance = NULL, stream_seen_at = NULL WHERE id = $1";
/// Takes host $1's lease for stream $2 of replica $3, agent instance $4
/// (presence $5 $6 $7 $9 $10 $11) when free, stale for $8 ms, or the same
/// instance's.
const TAKE_STREAM: &str = "UPDATE hosts SET stream_id = $2, stream_holder = $3, stream_instance = $4, \
     stream_seen_at = {now}, last_seen = {now}, agent_version = $5, fail2ban_version = $6, jails = $7, \
     jail_states = $9, states_at = {now} - $10, outbox_backlog = $11 \
     WHERE id = $1 AND revoked_at IS NULL \
     AND (stream_id IS NULL OR stream_seen_at <= {now} - $8 OR stream_instance = $4)";
/// Refreshes host $1's lease held by stream $2 (presence $3 … $8).
const REFRESH_STREAM: &str = "UPDATE hosts SET stream_seen_at = {now}, last_seen = {now}, agent_version = $3, \
     fail2ban_version = $4, jails = $5, jail_states = $6, states_at = {now} - $7, outbox_backlog = $8 \
     WHERE id = $1 AND stream_id = $2 AND revoked_at IS NULL";
/// Command $1 for host $2, operation $3, deadline $4 ms from now.
const INSERT_COMMAND: &str = "INSERT INTO host_commands (id, host_id, operation, created_at, deadline_at) \
     VALUES ($1, $2, $3, {now}, {now} + $4)";
const HOSTS_WITH_COMMANDS: &str =
    "SELECT DISTINCT host_id FROM host_commands WHERE taken_by IS NULL AND deadline_at > {now}";
/// Takes host $1's waiting commands for replica $2.
const TAKE_COMMANDS: &str = "UPDATE host_commands SET taken_by = $2, taken_at = {now} \
     WHERE host_id = $1 AND taken_by IS NULL AND deadline_at > {now} \
     RETURNING id, host_id, operation, deadline_at - {now} AS left_ms";
const RETURN_COMMAND: &str =
    "UPDATE host_commands SET taken_by = NULL, taken_at = NULL WHERE id = $1 AND outcome IS NULL";
const FINISH_COMMAND: &str = "UPDATE host_commands SET outcome = $2 WHERE id = $1 AND outcome IS NULL";
const COMMAND_OUTCOME: &str = "SELECT outcome FROM host_commands WHERE id = $1";
const DELETE_COMMAND: &str = "DELETE FROM host_commands WHERE id = $1";
const PURGE_COMMANDS: &str = "DELETE FROM host_commands WHERE deadline_at < {now} - $1";
const RELEASE_STREAM: &str = "UPDATE hosts SET stream_id = NULL, stream_holder = NULL, stream_instance = NULL, \
     stream_seen_at = NULL WHERE id = $1 AND stream_id = $2";

/// The host statements in one dialect (its clock).
#[derive(Debug)]
pub(crate) struct Statements {
    insert_token: String,
    use_token: String,
    insert_host: String,
    select_hosts: String,
    select_host: String,
    revoke_host: String,
    take_stream: String,
    refresh_stream: String,
    insert_command: String,
    hosts_with_commands: String,
    take_commands: String,
    purge_commands: String,
}

impl Statements {
    /// `now_ms`: the database's clock in Unix milliseconds.
    pub(crate) fn new(now_ms: &str) -> Self {
        let render = |template: &str| template.replace("{columns}", HOST_COLUMNS).replace("{now}", now_ms);
        Self {
            insert_token: render(INSERT_TOKEN),
            use_token: render(USE_TOKEN),
            insert_host: render(INSERT_HOST),
            select_hosts: render(SELECT_HOSTS),
            select_host: render(SELECT_HOST),
            revoke_host: render(REVOKE_HOST),
            take_stream: render(TAKE_STREAM),
            refresh_stream: render(REFRESH_STREAM),
            insert_command: render(INSERT_COMMAND),
            hosts_with_commands: render(HOSTS_WITH_COMMANDS),
            take_commands: render(TAKE_COMMANDS),
            purge_commands: render(PURGE_COMMANDS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hole_is_filled() {
        let s = Statements::new("NOW_MS");
        for sql in [
            &s.insert_token,
            &s.use_token,
            &s.insert_host,
            &s.select_hosts,
            &s.select_host,
            &s.revoke_host,
            &s.take_stream,
            &s.refresh_stream,
            &s.insert_command,
            &s.hosts_with_commands,
            &s.take_commands,
            &s.purge_commands,
        ] {
            assert!(!sql.contains('{') && sql.contains("NOW_MS"), "{sql}");
        }
    }
}
