//! Blocklist sources, what each lists, which bans of a jail imports made
//! and answer for, the operator's exceptions, and the record of every
//! import (`blocklist_sources`, `blocklist_listed`, `blocklist_owned`,
//! `blocklist_exceptions`, `blocklist_runs`). The same statements on both
//! backends, bound and run once in `sql.rs`.
//!
//! Addresses and networks are stored as bytes ([`net_bytes`]) whose order
//! is the networks' order, and read back a sorted page at a time
//! (`listed_page`, `owned_page`), so an import merges them with its own
//! sorted list without holding either whole. Every statement that takes a
//! list is built here for at most `LIST_CHUNK` of its values (`in_list`,
//! `values_rows`) and run once per chunk, inside one transaction where it
//! writes. After an import that listed many entries, the backend's
//! statistics are refreshed where its planner needs them
//! (`Dialect::ANALYZE_ENTRIES`).

mod sql;

#[cfg(test)]
mod contract;

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{Dialect, StoreError};
use crate::{
    blocklist::{BadLine, ImportCounts},
    kinds::{CidrPolicy, ImportStatus, RunTrigger},
};

/// What the operator says about a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// Unique among sources.
    pub name: String,
    /// Where the list is downloaded from.
    pub url: String,
    /// Imported on its schedule (a disabled source is imported only when
    /// asked).
    pub enabled: bool,
    /// The jail the list is mirrored into.
    pub jail: String,
    /// Six-field cron; empty: the runtime setting's default.
    pub schedule: String,
    pub cidr_policy: CidrPolicy,
    /// The largest body an import downloads.
    pub max_bytes: i64,
    /// The most entries an import keeps.
    pub max_entries: i64,
    /// Under the `ban` policy, the shortest IPv4 prefix banned: broader
    /// networks are skipped.
    pub ban_min_prefix_v4: u8,
    /// The same for IPv6.
    pub ban_min_prefix_v6: u8,
}

/// A stored source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Assigned by the store.
    pub id: i64,
    /// What the operator said.
    pub spec: SourceSpec,
    /// What the last successful import saw of the body (the validators of
    /// the next conditional GET, and the hash that makes an unchanged body
    /// send nothing to fail2ban).
    pub etag: Option<String>,
    /// See `etag`.
    pub last_modified: Option<String>,
    /// See `etag`: hex SHA-256 of the body.
    pub sha256: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Set once an import took the source: its jail cannot change.
    pub jail_fixed: bool,
    /// Who imports (or deletes) it now, if anyone.
    pub hold: Option<Hold>,
}

/// What an import saw of the body, kept for the next conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenBody {
    /// The `ETag` header.
    pub etag: Option<String>,
    /// The `Last-Modified` header.
    pub last_modified: Option<String>,
    /// Hex SHA-256 of the body.
    pub sha256: Option<String>,
}

/// One import of a source, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRun {
    /// 0 when new (the store assigns it).
    pub id: i64,
    /// The source imported (its runs go when it does).
    pub source_id: i64,
    /// The source's name when it ran (kept if it is renamed).
    pub source_name: String,
    /// Its schedule or an operator.
    pub trigger: RunTrigger,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds.
    pub finished_at: i64,
    /// How it ended.
    pub status: ImportStatus,
    /// `None`: no answer (the request failed before one).
    pub http_status: Option<u16>,
    /// Body bytes read.
    pub bytes: u64,
    /// Hex SHA-256 of the body, when one was read in full.
    pub sha256: Option<String>,
    /// What it saw and did, entry by entry.
    pub counts: ImportCounts,
    /// The first lines that could not be read (at most `MAX_BAD_LINES`).
    pub bad_lines: Vec<BadLine>,
    /// Why it failed or was partial.
    pub error: Option<String>,
}

/// Why a source could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SourceWriteError {
    /// Names are unique.
    #[error("a source named {0:?} exists")]
    NameTaken(String),
    /// No source has this id.
    #[error("no source {0}")]
    NotFound(i64),
    /// Its jail cannot change: an import took it (its bans are in that jail).
    #[error("the source imports into {0:?}: its jail is fixed once an import took it")]
    JailFixed(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The end of an import, written in one transaction.
#[derive(Debug, Clone)]
pub struct ImportCommit<'a> {
    /// The run to record (its id is ignored).
    pub run: &'a ImportRun,
    /// What the source now lists, sorted and unique, replacing what it
    /// listed (`None`: the list was not read, e.g. a failed run or an
    /// unchanged body: the entries stay as they were).
    pub listed: Option<&'a [IpNet]>,
    /// Replaces the source's etag/last_modified/sha256 (`None`: keep them;
    /// `Some` with all `None`: clear them).
    pub seen: Option<SeenBody>,
    /// Who held the source for the import (the hold is released).
    pub holder: &'a str,
}

/// An address an operator unbanned after an import banned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanException {
    pub jail: String,
    pub net: IpNet,
    /// Unix seconds.
    pub created_at: i64,
}

/// Who holds a source for an import or a delete, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// `replica#process`.
    pub by: String,
    /// Unix seconds of the last refresh.
    pub since: i64,
}

/// The blocklist aggregate.
#[async_trait::async_trait]
pub trait BlocklistStore: Send + Sync + std::fmt::Debug {
    /// Stores a new source; `NameTaken` if its name is.
    async fn create_source(&self, spec: &SourceSpec, now: i64) -> Result<Source, SourceWriteError>;
    /// Replaces the spec; a changed URL clears etag/last_modified/sha256
    /// (the new URL is downloaded in full). A new jail is refused with
    /// `JailFixed` once an import took the source, or while it is held
    /// (one conditional UPDATE: an import starting at the same moment
    /// either sees the new jail or makes the change fail).
    async fn update_source(&self, id: i64, spec: &SourceSpec, now: i64) -> Result<Source, SourceWriteError>;
    /// The source with this id.
    async fn source(&self, id: i64) -> Result<Option<Source>, StoreError>;
    /// The source with this name.
    async fn source_by_name(&self, name: &str) -> Result<Option<Source>, StoreError>;
    /// Every source, by name.
    async fn sources(&self) -> Result<Vec<Source>, StoreError>;
    /// Takes the source for `holder`: true if nobody holds it, or the hold
    /// was last refreshed before `stale_before` (its holder is gone).
    /// Fixes the source's jail. One conditional UPDATE.
    async fn hold_source(&self, id: i64, holder: &str, now: i64, stale_before: i64) -> Result<bool, StoreError>;
    /// Refreshes `holder`'s hold; false if it lost it.
    async fn refresh_hold(&self, id: i64, holder: &str, now: i64) -> Result<bool, StoreError>;
    /// Lets the source go if `holder` holds it.
    async fn release_source(&self, id: i64, holder: &str) -> Result<(), StoreError>;
    /// Releases every hold whose holder starts with `prefix` but is not
    /// `current` (an earlier process of this replica: it has ended).
    async fn release_holds_of(&self, prefix: &str, current: &str) -> Result<u64, StoreError>;
    /// Up to `limit` of the source's entries after `after`, in order.
    async fn listed_page(&self, source_id: i64, after: Option<&IpNet>, limit: u32) -> Result<Vec<IpNet>, StoreError>;
    /// Up to `limit` of the bans imports made in `jail` after `after`, in order.
    async fn owned_page(&self, jail: &str, after: Option<&IpNet>, limit: u32) -> Result<Vec<IpNet>, StoreError>;
    /// Of `candidates`, those imports made and answer for in `jail`.
    async fn owned_of(&self, jail: &str, candidates: &[IpNet]) -> Result<Vec<IpNet>, StoreError>;
    /// Records that imports banned `nets` in `jail` (after fail2ban did).
    /// Existing rows are kept.
    async fn own(&self, jail: &str, nets: &[IpNet]) -> Result<(), StoreError>;
    /// Forgets `nets` of `jail` (after they were unbanned, or left every list).
    async fn disown(&self, jail: &str, nets: &[IpNet]) -> Result<(), StoreError>;
    /// An operator unbanned `net` in `jail`: if an import had banned it,
    /// it is no longer the imports' and an exception keeps imports from
    /// banning it again (true). Nothing otherwise (false).
    async fn operator_unbanned(&self, jail: &str, net: &IpNet, at: i64) -> Result<bool, StoreError>;
    /// An operator banned `net` in `jail` by hand: imports no longer
    /// answer for it (true if they did).
    async fn operator_banned(&self, jail: &str, net: &IpNet) -> Result<bool, StoreError>;
    /// The exceptions of `jail`, or of every jail, by jail and address.
    async fn exceptions(&self, jail: Option<&str>) -> Result<Vec<BanException>, StoreError>;
    /// Drops an exception; false if there was none.
    async fn delete_exception(&self, jail: &str, net: &IpNet) -> Result<bool, StoreError>;
    /// Ends an import in one transaction: the list, the seen body, the run
    /// row, the release of the hold, and run retention (keep the newest
    /// `keep_runs` runs of the source; at least the one written).
    /// Returns the run's id.
    async fn finish_import(&self, commit: &ImportCommit<'_>, keep_runs: u32) -> Result<i64, StoreError>;
    /// Deletes the source with its entries and runs in one transaction.
    /// `NotFound` if it does not exist.
    async fn delete_source(&self, id: i64) -> Result<(), SourceWriteError>;
    /// The source's runs, newest first, those with id < `before` (`None`:
    /// from the newest), at most `limit`.
    async fn runs(&self, source_id: i64, before: Option<i64>, limit: u32) -> Result<Vec<ImportRun>, StoreError>;
    /// One run.
    async fn run(&self, id: i64) -> Result<Option<ImportRun>, StoreError>;
    /// Moves the entries and bans of the text tables of before issue 20
    /// (`*_v1`) into the byte tables, once; how many rows it moved.
    async fn upgrade_legacy(&self) -> Result<u64, StoreError>;
}

/// `net` as stored: the family (4 or 6), the address, the prefix length.
/// Byte order is [`IpNet`]'s order.
pub fn net_bytes(net: &IpNet) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(18);
    match net {
        IpNet::V4(v4) => {
            bytes.push(4);
            bytes.extend_from_slice(&v4.addr().octets());
        }
        IpNet::V6(v6) => {
            bytes.push(6);
            bytes.extend_from_slice(&v6.addr().octets());
        }
    }
    bytes.push(net.prefix_len());
    bytes
}

/// The network stored as `bytes` ([`net_bytes`]).
pub fn bytes_net(bytes: &[u8]) -> Result<IpNet, StoreError> {
    let bad = || StoreError::Corrupt(format!("a stored network of {} bytes is not one", bytes.len()));
    let net = match bytes {
        [4, a, b, c, d, len] => IpNet::V4(Ipv4Net::new(Ipv4Addr::new(*a, *b, *c, *d), *len).map_err(|_| bad())?),
        [6, rest @ ..] if rest.len() == 17 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[..16]);
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(octets), rest[16]).map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    };
    Ok(net)
}

/// Values one list statement binds at most. Both backends take far more
/// (SQLite 32 766, PostgreSQL 65 535), but SQLite's cost of binding grows
/// faster than the parameters (see `Dialect::ROWS_PER_INSERT`).
pub(crate) const LIST_CHUNK: usize = 500;

/// Entries an import adds or removes from which the backend's statistics
/// are refreshed (`Dialect::ANALYZE_ENTRIES`).
pub(crate) const ANALYZE_AFTER: usize = 10_000;

/// Inserts a source ($1 name … $10 ban_min_prefix_v6, $11 created_at = updated_at).
const INSERT_SOURCE: &str = "INSERT INTO blocklist_sources \
     (name, url, enabled, jail, schedule, cidr_policy, max_bytes, max_entries, ban_min_prefix_v4, \
     ban_min_prefix_v6, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
     RETURNING id, name, url, enabled, jail, schedule, cidr_policy, max_bytes, max_entries, \
     ban_min_prefix_v4, ban_min_prefix_v6, etag, last_modified, sha256, created_at, updated_at, jail_fixed, \
     held_by, importing_since";
/// Replaces source $1's spec ($2 … $11, $12 updated_at). The old URL is read
/// on the right-hand side: the seen body is kept only if $3 is the same.
/// The jail changes only while no import took the source.
const UPDATE_SOURCE: &str = "UPDATE blocklist_sources SET name = $2, url = $3, enabled = $4, jail = $5, \
     schedule = $6, cidr_policy = $7, max_bytes = $8, max_entries = $9, ban_min_prefix_v4 = $10, \
     ban_min_prefix_v6 = $11, updated_at = $12, \
     etag = CASE WHEN url = $3 THEN etag END, \
     last_modified = CASE WHEN url = $3 THEN last_modified END, \
     sha256 = CASE WHEN url = $3 THEN sha256 END \
     WHERE id = $1 AND (jail = $5 OR (NOT jail_fixed AND importing_since IS NULL)) \
     RETURNING id, name, url, enabled, jail, schedule, cidr_policy, max_bytes, max_entries, \
     ban_min_prefix_v4, ban_min_prefix_v6, etag, last_modified, sha256, created_at, updated_at, jail_fixed, \
     held_by, importing_since";
const SOURCE_BY_ID: &str = "SELECT id, name, url, enabled, jail, schedule, cidr_policy, max_bytes, max_entries, \
     ban_min_prefix_v4, ban_min_prefix_v6, etag, last_modified, sha256, created_at, updated_at, jail_fixed, \
     held_by, importing_since FROM blocklist_sources WHERE id = $1";
const SOURCE_BY_NAME: &str = "SELECT id, name, url, enabled, jail, schedule, cidr_policy, max_bytes, max_entries, \
     ban_min_prefix_v4, ban_min_prefix_v6, etag, last_modified, sha256, created_at, updated_at, jail_fixed, \
     held_by, importing_since FROM blocklist_sources WHERE name = $1";
const ALL_SOURCES: &str = "SELECT id, name, url, enabled, jail, schedule, cidr_policy, max_bytes, max_entries, \
     ban_min_prefix_v4, ban_min_prefix_v6, etag, last_modified, sha256, created_at, updated_at, jail_fixed, \
     held_by, importing_since FROM blocklist_sources ORDER BY name";
/// Holds source $1 for $4 from $2 if free or held since before $3 (not
/// again by $4: a holder does one thing at a time); fixes its jail.
const HOLD: &str = "UPDATE blocklist_sources SET importing_since = $2, held_by = $4, jail_fixed = TRUE \
     WHERE id = $1 AND (importing_since IS NULL OR importing_since < $3)";
/// Refreshes $3's hold on source $1 to $2.
const REFRESH_HOLD: &str = "UPDATE blocklist_sources SET importing_since = $2 WHERE id = $1 AND held_by = $3";
/// Releases source $1 if $2 holds it.
const RELEASE: &str =
    "UPDATE blocklist_sources SET importing_since = NULL, held_by = NULL WHERE id = $1 AND held_by = $2";
/// Releases the holds of holders starting with $1 other than $2.
const RELEASE_HOLDS_OF: &str = "UPDATE blocklist_sources SET importing_since = NULL, held_by = NULL \
     WHERE substr(held_by, 1, length($1)) = $1 AND held_by <> $2";
/// Replaces source $1's seen body ($2 etag, $3 last_modified, $4 sha256).
const SET_SEEN: &str = "UPDATE blocklist_sources SET etag = $2, last_modified = $3, sha256 = $4 WHERE id = $1";
/// Deletes source $1.
const DELETE_SOURCE: &str = "DELETE FROM blocklist_sources WHERE id = $1";
const DELETE_LISTED: &str = "DELETE FROM blocklist_listed WHERE source_id = $1";
const DELETE_RUNS: &str = "DELETE FROM blocklist_runs WHERE source_id = $1";
/// Source $1's entries after $2, in order, at most $3.
const LISTED_PAGE: &str = "SELECT net FROM blocklist_listed WHERE source_id = $1 AND net > $2 ORDER BY net LIMIT $3";
/// Jail $1's import bans after $2, in order, at most $3.
const OWNED_PAGE: &str = "SELECT net FROM blocklist_owned WHERE jail = $1 AND net > $2 ORDER BY net LIMIT $3";
/// Appends a run ($1 … $24 in [`ImportRun`]'s order, without the id).
const INSERT_RUN: &str = "INSERT INTO blocklist_runs (source_id, source_name, trigger, started_at, finished_at, \
     status, http_status, bytes, sha256, valid, invalid, duplicate, reserved, ignored, never_ban, cidr_skipped, \
     already_banned, newly_banned, unbanned, failed, rebanned, excepted, bad_lines, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
     $23, $24) RETURNING id";
/// Deletes source $1's runs older than its newest $2 (a range of the
/// (source_id, id) index; nothing when it has no more than $2).
const TRIM_RUNS: &str = "DELETE FROM blocklist_runs WHERE source_id = $1 AND id <= (\
     SELECT id FROM blocklist_runs WHERE source_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)";
/// The $3 runs of source $1 with id < $2, newest first.
const RUNS_BEFORE: &str = "SELECT id, source_id, source_name, trigger, started_at, finished_at, status, \
     http_status, bytes, sha256, valid, invalid, duplicate, reserved, ignored, never_ban, cidr_skipped, \
     already_banned, newly_banned, unbanned, failed, rebanned, excepted, bad_lines, error \
     FROM blocklist_runs WHERE source_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3";
const RUN_BY_ID: &str = "SELECT id, source_id, source_name, trigger, started_at, finished_at, status, \
     http_status, bytes, sha256, valid, invalid, duplicate, reserved, ignored, never_ban, cidr_skipped, \
     already_banned, newly_banned, unbanned, failed, rebanned, excepted, bad_lines, error \
     FROM blocklist_runs WHERE id = $1";
/// Removes jail $1's import ban $2 (an operator's unban or ban).
const DISOWN_ONE: &str = "DELETE FROM blocklist_owned WHERE jail = $1 AND net = $2";
/// Adds the exception ($1 jail, $2 net, $3 created_at).
const ADD_EXCEPTION: &str =
    "INSERT INTO blocklist_exceptions (jail, net, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
const DELETE_EXCEPTION: &str = "DELETE FROM blocklist_exceptions WHERE jail = $1 AND net = $2";
const ALL_EXCEPTIONS: &str = "SELECT jail, net, created_at FROM blocklist_exceptions ORDER BY jail, net";
const JAIL_EXCEPTIONS: &str =
    "SELECT jail, net, created_at FROM blocklist_exceptions WHERE jail = $1 ORDER BY jail, net";
/// Legacy rows, a page at a time (the text tables before issue 20).
const LEGACY_LISTED: &str = "SELECT source_id, entry FROM blocklist_entries_v1 LIMIT 5000";
const LEGACY_LISTED_DELETE: &str = "DELETE FROM blocklist_entries_v1 WHERE source_id = $1 AND entry = $2";
const LEGACY_OWNED: &str = "SELECT jail, entry FROM blocklist_bans_v1 LIMIT 5000";
const LEGACY_OWNED_DELETE: &str = "DELETE FROM blocklist_bans_v1 WHERE jail = $1 AND entry = $2";

/// Of a chunk, those an import banned in a jail ([`in_list`]).
const OWNED_OF: &str = "SELECT net FROM blocklist_owned WHERE jail = ";
/// Forgets a chunk of a jail's import bans ([`in_list`]).
const DISOWN: &str = "DELETE FROM blocklist_owned WHERE jail = ";
/// Adds rows `(source_id, net)` ([`key_rows`]).
const ADD_LISTED: &str = "INSERT INTO blocklist_listed (source_id, net) VALUES ";
/// Adds rows `(jail, net)` ([`key_rows`]).
const OWN: &str = "INSERT INTO blocklist_owned (jail, net) VALUES ";

// The list statements number their parameters with `Dialect::placeholder`,
// every one in the order it is bound: SQLite binds a thousand numbered
// parameters in quadratic time.

/// `head`, the key's placeholder, then ` AND net IN (…)` with `n`
/// placeholders: bind the key, then the chunk.
fn in_list<DB: Dialect>(head: &str, n: usize) -> String {
    let numbers: Vec<String> = (2..n + 2).map(DB::placeholder).collect();
    format!("{head}{} AND net IN ({})", DB::placeholder(1), numbers.join(", "))
}

/// `head`, then `n` rows `(key, net)`; rows already there are kept. Bind
/// the key and a network for each row.
fn key_rows<DB: Dialect>(head: &str, n: usize) -> String {
    let rows: Vec<String> =
        (0..n).map(|i| format!("({}, {})", DB::placeholder(2 * i + 1), DB::placeholder(2 * i + 2))).collect();
    format!("{head}{} ON CONFLICT DO NOTHING", rows.join(", "))
}

/// A stored count: the columns are signed.
fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `blocklist_sources` row as both backends return it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SourceRow {
    id: i64,
    name: String,
    url: String,
    enabled: bool,
    jail: String,
    schedule: String,
    #[sqlx(try_from = "String")]
    cidr_policy: CidrPolicy,
    max_bytes: i64,
    max_entries: i64,
    #[sqlx(try_from = "i64")]
    ban_min_prefix_v4: u8,
    #[sqlx(try_from = "i64")]
    ban_min_prefix_v6: u8,
    etag: Option<String>,
    last_modified: Option<String>,
    sha256: Option<String>,
    created_at: i64,
    updated_at: i64,
    jail_fixed: bool,
    held_by: Option<String>,
    importing_since: Option<i64>,
}

impl From<SourceRow> for Source {
    fn from(row: SourceRow) -> Self {
        Source {
            id: row.id,
            spec: SourceSpec {
                name: row.name,
                url: row.url,
                enabled: row.enabled,
                jail: row.jail,
                schedule: row.schedule,
                cidr_policy: row.cidr_policy,
                max_bytes: row.max_bytes,
                max_entries: row.max_entries,
                ban_min_prefix_v4: row.ban_min_prefix_v4,
                ban_min_prefix_v6: row.ban_min_prefix_v6,
            },
            etag: row.etag,
            last_modified: row.last_modified,
            sha256: row.sha256,
            created_at: row.created_at,
            updated_at: row.updated_at,
            jail_fixed: row.jail_fixed,
            hold: match (row.held_by, row.importing_since) {
                (Some(by), Some(since)) => Some(Hold { by, since }),
                (None, Some(since)) => Some(Hold { by: String::new(), since }),
                _ => None,
            },
        }
    }
}

/// A `blocklist_runs` row as both backends return it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RunRow {
    id: i64,
    source_id: i64,
    source_name: String,
    #[sqlx(try_from = "String")]
    trigger: RunTrigger,
    started_at: i64,
    finished_at: i64,
    #[sqlx(try_from = "String")]
    status: ImportStatus,
    http_status: Option<i32>,
    bytes: i64,
    sha256: Option<String>,
    valid: i64,
    invalid: i64,
    duplicate: i64,
    reserved: i64,
    ignored: i64,
    never_ban: i64,
    cidr_skipped: i64,
    already_banned: i64,
    newly_banned: i64,
    unbanned: i64,
    failed: i64,
    rebanned: i64,
    excepted: i64,
    bad_lines: String,
    error: Option<String>,
}

/// A stored count read back (never negative unless the row was edited).
fn unsigned(column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {column} {value}")))
}

impl TryFrom<RunRow> for ImportRun {
    type Error = StoreError;

    fn try_from(row: RunRow) -> Result<Self, StoreError> {
        let http_status = row
            .http_status
            .map(|s| u16::try_from(s).map_err(|_| StoreError::Corrupt(format!("HTTP status {s}"))))
            .transpose()?;
        let bad_lines = serde_json::from_str(&row.bad_lines)
            .map_err(|e| StoreError::Corrupt(format!("bad_lines of run {}: {e}", row.id)))?;
        let counts = ImportCounts {
            valid: unsigned("valid", row.valid)?,
            invalid: unsigned("invalid", row.invalid)?,
            duplicate: unsigned("duplicate", row.duplicate)?,
            reserved: unsigned("reserved", row.reserved)?,
            ignored: unsigned("ignored", row.ignored)?,
            never_ban: unsigned("never_ban", row.never_ban)?,
            cidr_skipped: unsigned("cidr_skipped", row.cidr_skipped)?,
            already_banned: unsigned("already_banned", row.already_banned)?,
            newly_banned: unsigned("newly_banned", row.newly_banned)?,
            unbanned: unsigned("unbanned", row.unbanned)?,
            failed: unsigned("failed", row.failed)?,
            rebanned: unsigned("rebanned", row.rebanned)?,
            excepted: unsigned("excepted", row.excepted)?,
        };
        Ok(ImportRun {
            id: row.id,
            source_id: row.source_id,
            source_name: row.source_name,
            trigger: row.trigger,
            started_at: row.started_at,
            finished_at: row.finished_at,
            status: row.status,
            http_status,
            bytes: unsigned("bytes", row.bytes)?,
            sha256: row.sha256,
            counts,
            bad_lines,
            error: row.error,
        })
    }
}

/// `error` as [`SourceWriteError::NameTaken`] if it is the unique
/// violation of the source's name (the only unique key a source write can
/// break).
fn name_taken(error: StoreError, name: &str) -> SourceWriteError {
    match &error {
        StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            SourceWriteError::NameTaken(name.to_owned())
        }
        _ => SourceWriteError::Store(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_statements_number_their_parameters_in_binding_order() {
        use sqlx::{Postgres, Sqlite};
        assert_eq!(in_list::<Postgres>(OWNED_OF, 3), format!("{OWNED_OF}$1 AND net IN ($2, $3, $4)"));
        assert_eq!(in_list::<Sqlite>(OWNED_OF, 2), format!("{OWNED_OF}? AND net IN (?, ?)"));
        assert_eq!(
            key_rows::<Postgres>(ADD_LISTED, 2),
            format!("{ADD_LISTED}($1, $2), ($3, $4) ON CONFLICT DO NOTHING")
        );
        assert_eq!(key_rows::<Sqlite>(OWN, 2), format!("{OWN}(?, ?), (?, ?) ON CONFLICT DO NOTHING"));
    }

    #[test]
    fn stored_networks_sort_as_networks_do() {
        let mut nets: Vec<IpNet> =
            ["2001:db8::/32", "1.2.3.4/32", "::1/128", "1.2.3.0/24", "255.0.0.0/8", "8.8.8.8/32"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        let mut bytes: Vec<Vec<u8>> = nets.iter().map(net_bytes).collect();
        nets.sort();
        bytes.sort();
        let back: Vec<IpNet> = bytes.iter().map(|b| bytes_net(b).unwrap()).collect();
        assert_eq!(back, nets);
        assert!(bytes_net(&[4, 1, 2, 3]).is_err());
        assert!(bytes_net(&[4, 1, 2, 3, 4, 33]).is_err());
        assert!(bytes_net(&[5, 1, 2, 3, 4, 8]).is_err());
    }
}
