//! Reading fail2ban's `bans` table without losing a row, into a sink: the
//! one reader behind the control-service's embedded history sync (its sink
//! archives) and fail2ban-agent's (its sink fills the durable outbox).
//!
//! * Batches are bounded in rows and bytes ([`ReadLimits`], and
//!   [`crate::db`]'s per-row bounds); the sink stores each batch, and the
//!   rowid cursor with it, in one transaction ([`HistorySink::take`]).
//! * Nothing is lost to a reused rowid. fail2ban's table has no
//!   AUTOINCREMENT and an unban deletes the row, so after the newest rows
//!   are deleted the next bans take their rowids again. Each sync therefore
//!   reads in two passes:
//!   1. the re-check: per jail, in (timeofban, rowid) order (fail2ban's
//!      `bans(jail, timeofban)` index), the keys of every row banned since
//!      [`RECHECK_OVERLAP`] before the previous sync began, up to the stored
//!      rowid; rows the sink does not hold yet ([`HistorySink::known`]: a
//!      reused rowid) are read and taken;
//!   2. the rows after the stored rowid (new whatever their time: a clock
//!      step or a late ban loses nothing), advancing the rowid cursor batch
//!      by batch. A table that shrank below the cursor (its newest rows
//!      deleted, or emptied) is read from its new end.
//!
//!   A ban is missed only if it took a reused rowid *and* its time is more
//!   than [`RECHECK_OVERLAP`] before the previous sync (fail2ban's clock
//!   stepped back that far between two syncs).
//! * A row whose `data` is not UTF-8, not JSON or too large, or whose jail
//!   or address is not UTF-8, is taken with what can be read (jail, ip,
//!   times, bantime, bancount; text made valid), marked [`Unreadable`] and
//!   logged.
//! * Time zones: fail2ban stores Unix seconds; nothing here reads a local
//!   time.

use std::collections::HashMap;

use crate::db::{BanData, Fail2banBan, Fail2banDb, ReadLimits};

/// Rows read and taken per batch, at most.
pub const BATCH: u32 = 5_000;
/// Bytes of fail2ban rows read per batch: the batch ends with the row that
/// reaches it (a row brings at most 64 KiB of `data`, or its cut).
pub const BATCH_BYTES: usize = 2 << 20;
/// How long before the previous sync began the re-check starts: a ban
/// that took a reused rowid is found if fail2ban stamped it no earlier.
pub const RECHECK_OVERLAP: i64 = 3_600;
/// Log lines kept per ban, and characters per line.
pub const MAX_MATCHES: usize = 20;
pub const MAX_MATCH_CHARS: usize = 500;

/// Why a row's `data` was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unreadable {
    NotUtf8,
    NotJson,
    TooLarge,
}

impl Unreadable {
    /// The metric label and the wire form.
    pub fn label(self) -> &'static str {
        match self {
            Unreadable::NotUtf8 => "not_utf8",
            Unreadable::NotJson => "not_json",
            Unreadable::TooLarge => "too_large",
        }
    }

    /// The inverse of [`Unreadable::label`].
    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            "not_utf8" => Some(Unreadable::NotUtf8),
            "not_json" => Some(Unreadable::NotJson),
            "too_large" => Some(Unreadable::TooLarge),
            _ => None,
        }
    }
}

/// One row of fail2ban's `bans` table, decoded and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRow {
    pub rowid: i64,
    /// Lossy UTF-8 when the stored bytes were not.
    pub jail: String,
    pub ip: String,
    /// Unix seconds.
    pub banned_at: i64,
    /// -1: permanent.
    pub ban_seconds: i64,
    pub ban_count: i32,
    pub failures: i32,
    /// The latest [`MAX_MATCHES`] log lines, each at most
    /// [`MAX_MATCH_CHARS`] characters; empty when unreadable.
    pub matches: Vec<String>,
    /// Set when the row was taken without its log lines.
    pub unreadable: Option<Unreadable>,
}

/// `{"matches": [...], "failures": n}` → (failures, bounded matches).
pub fn ban_data(data: &BanData) -> Result<(i32, Vec<String>), Unreadable> {
    let bytes = match data {
        BanData::Null => return Ok((0, Vec::new())),
        BanData::Whole(bytes) | BanData::Cut(bytes) => bytes,
        BanData::NotJson { .. } => return Err(Unreadable::NotJson),
        BanData::TooLarge { .. } => return Err(Unreadable::TooLarge),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| Unreadable::NotUtf8)?;
    let value = serde_json::from_str::<serde_json::Value>(text).map_err(|_| Unreadable::NotJson)?;
    let failures =
        value.get("failures").and_then(serde_json::Value::as_i64).and_then(|n| i32::try_from(n).ok()).unwrap_or(0);
    let matches: Vec<String> = value
        .get("matches")
        .and_then(serde_json::Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .rev()
                .take(MAX_MATCHES)
                .map(|line| match line {
                    serde_json::Value::String(s) => s.clone(),
                    // fail2ban keeps a match as a list of its parts.
                    serde_json::Value::Array(parts) => parts.iter().filter_map(|p| p.as_str()).collect::<String>(),
                    other => other.to_string(),
                })
                .map(|line| line.chars().take(MAX_MATCH_CHARS).collect())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        })
        .unwrap_or_default();
    Ok((failures, matches))
}

impl BanRow {
    /// Decodes a row as read; an unreadable row is logged.
    pub fn decode(ban: Fail2banBan) -> Self {
        let jail = String::from_utf8(ban.jail);
        let ip = String::from_utf8(ban.ip);
        let data = ban_data(&ban.data);
        let text_ok = jail.is_ok() && ip.is_ok();
        let jail = jail.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let ip = ip.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let (failures, matches, unreadable) = match (data, text_ok) {
            (Ok((failures, matches)), true) => (failures, matches, None),
            (outcome, _) => {
                let reason = outcome.err().unwrap_or(Unreadable::NotUtf8);
                tracing::warn!(
                    rowid = ban.rowid,
                    %jail,
                    %ip,
                    timeofban = ban.timeofban,
                    reason = reason.label(),
                    "a fail2ban ban's data cannot be read: taken without its log lines"
                );
                (0, Vec::new(), Some(reason))
            }
        };
        BanRow {
            rowid: ban.rowid,
            jail,
            ip,
            banned_at: ban.timeofban,
            ban_seconds: ban.bantime,
            ban_count: i32::try_from(ban.bancount).unwrap_or(i32::MAX),
            failures,
            matches,
            unreadable,
        }
    }
}

/// Where the sync stands, as the sink stored it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursors {
    /// The last rowid of fail2ban's `bans` table read (pass 2).
    pub rowid: Option<i64>,
    /// When the last complete sync began (the caller's clock).
    pub checked: Option<i64>,
    /// The newest ban time taken.
    pub newest: Option<i64>,
}

/// A ban the sink already holds, for the re-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBan {
    pub ip: String,
    pub banned_at: i64,
    /// Made through BanGUI (recorded at once, with the time as
    /// `--with-time` prints it): the same ban within a second.
    pub own: bool,
}

/// What the reader hands its rows to.
#[async_trait::async_trait]
pub trait HistorySink: Send + Sync {
    type Error: Send;

    /// The cursors as stored.
    async fn cursors(&self) -> Result<Cursors, Self::Error>;
    /// `jail`'s bans the sink holds banned from `from` to `to` (inclusive).
    async fn known(&self, jail: &str, from: i64, to: i64) -> Result<Vec<KnownBan>, Self::Error>;
    /// Stores `rows` (in rowid order) and, when `rowid` is given, the rowid
    /// cursor, in one transaction. Returns how many rows were new.
    async fn take(&self, rows: Vec<BanRow>, rowid: Option<i64>) -> Result<u64, Self::Error>;
    /// A sync read everything: store the cursors.
    async fn finish(&self, cursors: Cursors) -> Result<(), Self::Error>;
}

/// What a sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Rows read from fail2ban's table.
    pub read: u64,
    /// Rows the sink found new.
    pub taken: u64,
    /// Rows taken without their log lines.
    pub unreadable: u64,
    /// Keys of recent rows the re-check compared with the sink.
    pub rechecked: u64,
}

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError<E> {
    #[error("cannot read fail2ban's database: {0}")]
    Read(#[source] sqlx::Error),
    #[error("the sink failed")]
    Sink(E),
}

/// How a sync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncParams {
    /// The caller's clock (Unix seconds) when the sync began.
    pub now: i64,
    /// Where the first sync's re-check starts (the backfill window).
    pub backfill_from: i64,
    pub limits: ReadLimits,
}

impl SyncParams {
    /// [`BATCH`] rows and [`BATCH_BYTES`] per batch.
    pub fn new(now: i64, backfill_from: i64) -> Self {
        Self { now, backfill_from, limits: ReadLimits { rows: BATCH, batch_bytes: BATCH_BYTES } }
    }
}

/// Whether `known` holds the ban (`ip`, `at`): the same time for a ban the
/// sync took, within a second for one made through BanGUI (fail2ban's
/// database rounds the time, `--with-time` floors it).
fn held(known: &HashMap<String, Vec<(i64, bool)>>, ip: &str, at: i64) -> bool {
    known.get(ip).is_some_and(|times| times.iter().any(|(t, own)| *t == at || (*own && (t - at).abs() <= 1)))
}

/// Hands the rows of `db` the sink lacks to `sink`.
pub async fn sync<S: HistorySink>(
    db: &Fail2banDb,
    sink: &S,
    params: SyncParams,
) -> Result<SyncReport, SyncError<S::Error>> {
    let SyncParams { now, backfill_from, limits } = params;
    let stored = sink.cursors().await.map_err(SyncError::Sink)?;
    let max_rowid = db.max_rowid().await.map_err(SyncError::Read)?;
    // Rows above the stored rowid are new. A table that shrank below it
    // gives its next rows the rowids from its new end: read from there.
    // First sync: the re-check reads the backfill window.
    let after = stored.rowid.map_or(max_rowid, |rowid| rowid.min(max_rowid));
    let recheck_from = match (stored.rowid, stored.checked, stored.newest) {
        (None, _, _) => backfill_from,
        // min: the caller's clock stepping back does not skip the re-check.
        (Some(_), Some(at), _) => at.min(now) - RECHECK_OVERLAP,
        // Cursors of a version without the re-check.
        (Some(_), None, Some(newest)) => newest.min(now) - RECHECK_OVERLAP,
        (Some(_), None, None) => backfill_from,
    };
    let mut report = SyncReport::default();
    let mut newest = stored.newest.unwrap_or(i64::MIN);
    let mut take = async |batch: Vec<Fail2banBan>, rowid: Option<i64>, report: &mut SyncReport| {
        report.read += batch.len() as u64;
        newest = batch.iter().map(|b| b.timeofban).fold(newest, i64::max);
        let rows: Vec<BanRow> = batch.into_iter().map(BanRow::decode).collect();
        report.unreadable += rows.iter().filter(|r| r.unreadable.is_some()).count() as u64;
        report.taken += sink.take(rows, rowid).await.map_err(SyncError::Sink)?;
        Ok::<_, SyncError<S::Error>>(())
    };

    // 1. The re-check: the rowid cursor does not move, so a failure repeats it.
    for jail in db.jails().await.map_err(SyncError::Read)? {
        let jail_name = String::from_utf8_lossy(&jail).into_owned();
        let mut position = (recheck_from, i64::MIN);
        loop {
            let keys = db.keys_since(&jail, position, after, limits.rows).await.map_err(SyncError::Read)?;
            let (Some(first), Some(last)) = (keys.first(), keys.last()) else { break };
            position = (last.timeofban, last.rowid);
            report.rechecked += keys.len() as u64;
            let mut known: HashMap<String, Vec<(i64, bool)>> = HashMap::new();
            for ban in sink.known(&jail_name, first.timeofban - 1, last.timeofban + 1).await.map_err(SyncError::Sink)? {
                known.entry(ban.ip).or_default().push((ban.banned_at, ban.own));
            }
            let mut missing: Vec<i64> = keys
                .iter()
                .filter(|k| !held(&known, &String::from_utf8_lossy(&k.ip), k.timeofban))
                .map(|k| k.rowid)
                .collect();
            missing.sort_unstable();
            let mut pending = missing.as_slice();
            while !pending.is_empty() {
                let batch = db.bans_by_rowid(pending, limits).await.map_err(SyncError::Read)?;
                let Some(last_read) = batch.last().map(|b| b.rowid) else { break };
                pending = &pending[pending.partition_point(|rowid| *rowid <= last_read)..];
                take(batch, None, &mut report).await?;
            }
            if keys.len() < limits.rows as usize {
                break;
            }
        }
    }

    // 2. The rows after the rowid cursor, which advances with each batch.
    let mut position = after;
    loop {
        let batch = db.bans_after(position, limits).await.map_err(SyncError::Read)?;
        let Some(last) = batch.last() else { break };
        position = last.rowid;
        take(batch, Some(position), &mut report).await?;
    }
    let done = Cursors { rowid: Some(position), checked: Some(now), newest: (newest > i64::MIN).then_some(newest) };
    sink.finish(done).await.map_err(SyncError::Sink)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(s: &str) -> BanData {
        BanData::Whole(s.as_bytes().to_vec())
    }

    #[test]
    fn ban_data_is_bounded_and_tolerant() {
        assert_eq!(ban_data(&BanData::Null), Ok((0, Vec::new())));
        assert_eq!(ban_data(&whole("not json")), Err(Unreadable::NotJson));
        assert_eq!(ban_data(&BanData::Whole(b"{\"matches\": [\"\xff\xfe\"]}".to_vec())), Err(Unreadable::NotUtf8));
        assert_eq!(ban_data(&BanData::NotJson { bytes: 1 << 20 }), Err(Unreadable::NotJson));
        assert_eq!(ban_data(&BanData::TooLarge { bytes: 1 << 30 }), Err(Unreadable::TooLarge));
        let (failures, matches) =
            ban_data(&whole(r#"{"matches": [["2026-11-23 ", "auth failure from 1.2.3.4"]], "failures": 4}"#)).unwrap();
        assert_eq!(failures, 4);
        assert_eq!(matches, ["2026-11-23 auth failure from 1.2.3.4"]);
        let many: Vec<String> = (0..100).map(|i| format!("{i} {}", "x".repeat(1000))).collect();
        let data = serde_json::json!({"matches": many, "failures": 100}).to_string();
        let (_, kept) = ban_data(&whole(&data)).unwrap();
        assert_eq!(kept.len(), MAX_MATCHES);
        assert!(
            kept[0].starts_with("80 ") && kept.iter().all(|l| l.chars().count() <= MAX_MATCH_CHARS),
            "the latest lines"
        );
    }

    #[test]
    fn a_ban_is_held_if_the_same_time_or_an_own_ban_within_a_second_is() {
        let mut bans: HashMap<String, Vec<(i64, bool)>> = HashMap::new();
        bans.entry("192.0.2.1".into()).or_default().push((100, false));
        bans.entry("192.0.2.2".into()).or_default().push((200, true));
        assert!(held(&bans, "192.0.2.1", 100));
        assert!(!held(&bans, "192.0.2.1", 101), "another ban of the same address");
        assert!(held(&bans, "192.0.2.2", 201) && held(&bans, "192.0.2.2", 199));
        assert!(!held(&bans, "192.0.2.2", 202));
        assert!(!held(&bans, "192.0.2.3", 100));
    }

    #[test]
    fn unreadable_labels_round_trip() {
        for u in [Unreadable::NotUtf8, Unreadable::NotJson, Unreadable::TooLarge] {
            assert_eq!(Unreadable::from_label(u.label()), Some(u));
        }
        assert_eq!(Unreadable::from_label("other"), None);
    }
}
