//! The ban history archive: fail2ban's bans copied into the control
//! database before fail2ban purges them, with the country resolved at
//! archive time, and the dashboard queries over it.
//!
//! * Sync (the leader's `history_sync` job): reads fail2ban's `bans` table
//!   read-only, in batches bounded in rows and bytes; each batch is placed
//!   through the geo-service and archived in one transaction. Re-running
//!   adds nothing: rows are unique on (jail, ip, banned_at, event). The
//!   geo-service being down archives rows without a country;
//!   `history_geo_backfill` fills them in later.
//! * Nothing is lost to a reused rowid. fail2ban's table has no
//!   AUTOINCREMENT and an unban deletes the row, so after the newest rows
//!   are deleted the next bans take their rowids again. Each sync therefore
//!   reads in two passes:
//!   1. the re-check: per jail, in (timeofban, rowid) order (fail2ban's
//!      `bans(jail, timeofban)` index), the keys of every row banned since
//!      [`RECHECK_OVERLAP`] before the previous sync began, up to the stored
//!      rowid; rows the archive does not hold yet (a reused rowid) are read
//!      and archived;
//!   2. the rows after the stored rowid (new whatever their time: a clock
//!      step or a late ban loses nothing), advancing the rowid cursor batch
//!      by batch. A table that shrank below the cursor (its newest rows
//!      deleted, or emptied) is read from its new end.
//!
//!   A ban is missed only if it took a reused rowid *and* its time is more
//!   than [`RECHECK_OVERLAP`] before the previous sync (fail2ban's clock
//!   stepped back that far between two syncs).
//! * A row whose `data` is not UTF-8, not JSON or too large is archived
//!   with what can be read (jail, ip, times, bantime, bancount), counted in
//!   `control_history_unreadable_rows_total{reason}` and logged.
//! * fail2ban without a database (`dbfile = :memory:`): said once in the
//!   log; the job's runs are recorded as `skipped`.
//! * Bans and unbans made through JailService are archived at once with
//!   origin `manual`; those of blocklist imports with origin `blocklist`
//!   and the source's name. The sync does not archive them again.
//! * Retention: `history_retention` (the `history_retention` job).
//! * The dashboard's questions: [`queries`].

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    clock::Clock,
    geo_client::{Country, GeoClient},
    kinds::{Event, Origin},
    metrics::Metrics,
    settings::RuntimeSettings,
    store::{
        HistoryStore, StoreError,
        history::{ArchivedBan, GeoFill},
    },
};
use bangui_fail2ban::{
    Fail2ban, Fail2banError,
    db::{BanData, Fail2banBan, Fail2banDb, ReadLimits},
};

pub mod queries;

/// The newest ban time archived from fail2ban's `bans` table.
pub const FAIL2BAN_SOURCE: &str = "fail2ban";
/// The last rowid of fail2ban's `bans` table read.
pub const FAIL2BAN_ROWID: &str = "fail2ban:rowid";
/// When the last complete sync began (this service's clock).
pub const FAIL2BAN_CHECKED: &str = "fail2ban:checked";
/// Rows read and archived per batch, at most.
const BATCH: u32 = 5_000;
/// Bytes of fail2ban rows read per batch: the batch ends with the row that
/// reaches it (a row brings at most 64 KiB of `data`, or its cut).
const BATCH_BYTES: usize = 2 << 20;
/// How long before the previous sync began the re-check starts: a ban
/// that took a reused rowid is found if fail2ban stamped it no earlier.
pub const RECHECK_OVERLAP: i64 = 3_600;
/// Log lines kept per ban, and characters per line.
const MAX_MATCHES: usize = 20;
const MAX_MATCH_CHARS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot find fail2ban's database: {0}")]
    NoDatabase(String),
    #[error("cannot read fail2ban's database {path}: {source}")]
    Fail2banDb { path: String, source: sqlx::Error },
}

/// What a sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Rows read from fail2ban's table.
    pub read: u64,
    pub archived: u64,
    pub without_country: u64,
    /// Rows whose `data` could not be read (archived without log lines).
    pub unreadable: u64,
    /// Keys of recent rows the re-check compared with the archive.
    pub rechecked: u64,
}

/// How a sync ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Synced(SyncReport),
    /// Nothing to read (fail2ban keeps no database): why.
    Skipped(String),
}

/// The archive and its sources.
#[derive(Debug, Clone)]
pub struct History {
    store: Arc<dyn HistoryStore>,
    fail2ban: Fail2ban,
    geo: GeoClient,
    settings: RuntimeSettings,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// "fail2ban keeps no database" was logged (once, until it keeps one).
    no_database_said: Arc<AtomicBool>,
}

/// Why a row's `data` was not read: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unreadable {
    NotUtf8,
    NotJson,
    TooLarge,
}

impl Unreadable {
    fn label(self) -> &'static str {
        match self {
            Unreadable::NotUtf8 => "not_utf8",
            Unreadable::NotJson => "not_json",
            Unreadable::TooLarge => "too_large",
        }
    }
}

/// `{"matches": [...], "failures": n}` → (failures, bounded matches JSON).
fn ban_data(data: &BanData) -> Result<(i32, String), Unreadable> {
    let bytes = match data {
        BanData::Null => return Ok((0, "[]".into())),
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
    Ok((failures, serde_json::to_string(&matches).unwrap_or_else(|_| "[]".into())))
}

/// Whether the archive already holds the ban (`ip`, `at`) of a jail,
/// given that jail's archived bans around `at`: the same time for a ban
/// the sync archived, within a second for one archived at once by
/// JailService (fail2ban's database rounds the time, `--with-time` floors it).
fn archived(bans: &HashMap<String, Vec<(i64, Origin)>>, ip: &str, at: i64) -> bool {
    bans.get(ip).is_some_and(|times| {
        times.iter().any(|(t, origin)| *t == at || (*origin != Origin::Fail2ban && (t - at).abs() <= 1))
    })
}

/// The country code stored for an address that was looked up and that
/// nobody could place. Not NULL, which means "not looked up yet": the
/// back-fill asks again only for those.
const UNKNOWN_COUNTRY: &str = "";

/// Whether a stored country code places nobody: not looked up yet (NULL),
/// or looked up and unknown. The dashboard shows both as "unknown".
pub fn is_unknown_country(code: Option<&str>) -> bool {
    code.is_none_or(|code| code == UNKNOWN_COUNTRY)
}

/// What the archive stores for an address the geo-service was asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    country_code: String,
    country_name: String,
    asn: Option<i64>,
    as_org: Option<String>,
}

impl Placement {
    /// `country` as the geo-service answered; `None`: nobody could place it.
    fn of(country: Option<&Country>) -> Self {
        match country {
            Some(c) => Placement {
                country_code: c.code.clone(),
                country_name: c.name.clone(),
                asn: c.asn.map(i64::from),
                as_org: c.as_org.clone(),
            },
            None => Placement {
                country_code: UNKNOWN_COUNTRY.to_owned(),
                country_name: String::new(),
                asn: None,
                as_org: None,
            },
        }
    }

    fn fill(self, id: i64) -> GeoFill {
        GeoFill {
            id,
            country_code: self.country_code,
            country_name: self.country_name,
            asn: self.asn,
            as_org: self.as_org,
        }
    }

    fn place(self, row: &mut ArchivedBan) {
        row.country_code = Some(self.country_code);
        row.country_name = Some(self.country_name);
        row.asn = self.asn;
        row.as_org = self.as_org;
    }
}

impl History {
    pub fn new(
        store: Arc<dyn HistoryStore>,
        fail2ban: Fail2ban,
        geo: GeoClient,
        settings: RuntimeSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { store, fail2ban, geo, settings, clock, metrics: Metrics::new(), no_database_said: Arc::default() }
    }

    /// Counts unreadable rows in the service's metrics.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn store(&self) -> &Arc<dyn HistoryStore> {
        &self.store
    }

    /// fail2ban's database file ([`Fail2ban::database_path`]); `None` when
    /// it keeps none (said once in the log, not at every run).
    async fn db_path(&self) -> Result<Option<PathBuf>, HistoryError> {
        match self.fail2ban.database_path().await {
            Ok(Some(path)) => {
                if self.no_database_said.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %path.display(), "fail2ban keeps a database again: the history sync resumes");
                }
                Ok(Some(path))
            }
            Ok(_) => {
                if !self.no_database_said.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "fail2ban keeps no database (dbfile = :memory: or none): there is no ban history to copy; \
                         history_sync runs are recorded as skipped until fail2ban keeps one (dbfile in fail2ban.local)"
                    );
                }
                Ok(None)
            }
            Err(e @ Fail2banError::Unavailable { .. }) => {
                Err(HistoryError::NoDatabase(format!("{e}; set --fail2ban-db to read the file directly")))
            }
            Err(e) => Err(HistoryError::NoDatabase(e.to_string())),
        }
    }

    /// Countries for `rows`; rows stay unplaced (country NULL) when the
    /// geo-service cannot be asked.
    async fn locate(&self, rows: &mut [ArchivedBan]) -> u64 {
        if rows.is_empty() || !self.geo.is_configured() {
            return rows.len() as u64;
        }
        match self.geo.countries(rows.iter().map(|r| r.ip.as_str())).await {
            Ok(found) => {
                for row in rows.iter_mut() {
                    Placement::of(found.get(&row.ip)).place(row);
                }
                0
            }
            Err(error) => {
                tracing::warn!(%error, rows = rows.len(), "geo-service unavailable: archiving without countries");
                rows.len() as u64
            }
        }
    }

    /// Copies the bans of fail2ban's `bans` table the archive lacks.
    pub async fn sync(&self) -> Result<SyncOutcome, HistoryError> {
        let Some(path) = self.db_path().await? else {
            return Ok(SyncOutcome::Skipped("fail2ban keeps no database (dbfile = :memory: or none)".into()));
        };
        let db = Fail2banDb::open(&path)
            .await
            .map_err(|source| HistoryError::Fail2banDb { path: path.display().to_string(), source })?;
        let result = self.sync_from(&db, &path).await;
        db.close().await;
        result.map(SyncOutcome::Synced)
    }

    async fn sync_from(&self, db: &Fail2banDb, path: &Path) -> Result<SyncReport, HistoryError> {
        let read_error = |source| HistoryError::Fail2banDb { path: path.display().to_string(), source };
        let now = self.clock.now();
        let stored_rowid = self.store.cursor(FAIL2BAN_ROWID).await?;
        let newest_seen = self.store.cursor(FAIL2BAN_SOURCE).await?;
        let checked = self.store.cursor(FAIL2BAN_CHECKED).await?;
        let max_rowid = db.max_rowid().await.map_err(read_error)?;
        // Rows above the stored rowid are new. A table that shrank below it
        // gives its next rows the rowids from its new end: read from there.
        // First sync: the re-check reads the backfill window.
        let after = stored_rowid.map_or(max_rowid, |rowid| rowid.min(max_rowid));
        let backfill = || async {
            let window = self.settings.get().await?.history_backfill.as_secs();
            Ok::<_, HistoryError>(now - i64::try_from(window).unwrap_or(i64::MAX / 2))
        };
        let recheck_from = match (stored_rowid, checked, newest_seen) {
            (None, _, _) => backfill().await?,
            // min: this service's clock stepping back does not skip the re-check.
            (Some(_), Some(at), _) => at.min(now) - RECHECK_OVERLAP,
            // Cursors of a version without the re-check.
            (Some(_), None, Some(newest)) => newest.min(now) - RECHECK_OVERLAP,
            (Some(_), None, None) => backfill().await?,
        };
        let mut report = SyncReport::default();
        let mut newest = newest_seen.unwrap_or(i64::MIN);
        let limits = ReadLimits { rows: BATCH, batch_bytes: BATCH_BYTES };

        // 1. The re-check: nothing is stored, so a failure repeats it.
        for jail in db.jails().await.map_err(read_error)? {
            let jail_name = String::from_utf8_lossy(&jail).into_owned();
            let mut position = (recheck_from, i64::MIN);
            loop {
                let keys = db.keys_since(&jail, position, after, BATCH).await.map_err(read_error)?;
                let (Some(first), Some(last)) = (keys.first(), keys.last()) else { break };
                position = (last.timeofban, last.rowid);
                report.rechecked += keys.len() as u64;
                let mut known: HashMap<String, Vec<(i64, Origin)>> = HashMap::new();
                for (ip, at, origin) in
                    self.store.jail_bans(&jail_name, first.timeofban - 1, last.timeofban + 1).await?
                {
                    known.entry(ip).or_default().push((at, origin));
                }
                let missing: Vec<i64> = keys
                    .iter()
                    .filter(|k| !archived(&known, &String::from_utf8_lossy(&k.ip), k.timeofban))
                    .map(|k| k.rowid)
                    .collect();
                let mut missing = missing;
                missing.sort_unstable();
                let mut pending = missing.as_slice();
                while !pending.is_empty() {
                    let batch = db.bans_by_rowid(pending, limits).await.map_err(read_error)?;
                    let Some(last_read) = batch.last().map(|b| b.rowid) else { break };
                    pending = &pending[pending.partition_point(|rowid| *rowid <= last_read)..];
                    self.archive_batch(batch, now, &mut report, &mut newest).await?;
                }
                if keys.len() < BATCH as usize {
                    break;
                }
            }
        }

        // 2. The rows after the rowid cursor, which advances batch by batch.
        let mut position = after;
        loop {
            let batch = db.bans_after(position, limits).await.map_err(read_error)?;
            let Some(last) = batch.last() else { break };
            position = last.rowid;
            self.archive_batch(batch, now, &mut report, &mut newest).await?;
            // Advance only after the batch is safely archived.
            self.store.set_cursor(FAIL2BAN_ROWID, position, now).await?;
        }
        if stored_rowid != Some(position) {
            self.store.set_cursor(FAIL2BAN_ROWID, position, now).await?;
        }
        if newest > i64::MIN {
            self.store.set_cursor(FAIL2BAN_SOURCE, newest, now).await?;
        }
        self.store.set_cursor(FAIL2BAN_CHECKED, now, now).await?;
        Ok(report)
    }

    /// Archives one batch of fail2ban rows.
    async fn archive_batch(
        &self,
        batch: Vec<Fail2banBan>,
        now: i64,
        report: &mut SyncReport,
        newest: &mut i64,
    ) -> Result<(), HistoryError> {
        report.read += batch.len() as u64;
        *newest = batch.iter().map(|b| b.timeofban).fold(*newest, i64::max);
        let mut rows: Vec<ArchivedBan> = Vec::with_capacity(batch.len());
        for ban in batch {
            let jail = String::from_utf8(ban.jail);
            let ip = String::from_utf8(ban.ip);
            let data = ban_data(&ban.data);
            let text_ok = jail.is_ok() && ip.is_ok();
            let jail = jail.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            let ip = ip.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            let (failures, matches) = match (data, text_ok) {
                (Ok(read), true) => read,
                (outcome, _) => {
                    let reason = outcome.err().unwrap_or(Unreadable::NotUtf8);
                    report.unreadable += 1;
                    self.metrics.history_unreadable_row(reason.label());
                    tracing::warn!(
                        rowid = ban.rowid,
                        %jail,
                        %ip,
                        timeofban = ban.timeofban,
                        reason = reason.label(),
                        "a fail2ban ban's data cannot be read: archived without its log lines"
                    );
                    (0, "[]".into())
                }
            };
            rows.push(ArchivedBan {
                id: 0,
                jail,
                ip,
                banned_at: ban.timeofban,
                ban_seconds: ban.bantime,
                ban_count: i32::try_from(ban.bancount).unwrap_or(i32::MAX),
                origin: Origin::Fail2ban,
                event: Event::Ban,
                failures,
                matches,
                country_code: None,
                country_name: None,
                asn: None,
                as_org: None,
                archived_at: now,
                source: None,
            });
        }
        // A ban made through JailService is archived at once as `manual`,
        // with fail2ban's ban time as `--with-time` prints it (whole
        // seconds, floored); fail2ban's database rounds. The same ban is
        // not archived twice.
        let (low, high) = rows.iter().fold((i64::MAX, i64::MIN), |(l, h), r| (l.min(r.banned_at), h.max(r.banned_at)));
        let mut manual: HashMap<(String, String), Vec<i64>> = HashMap::new();
        for (jail, ip, at) in self.store.manual_bans(low.saturating_sub(1), high.saturating_add(1)).await? {
            manual.entry((jail, ip)).or_default().push(at);
        }
        if !manual.is_empty() {
            rows.retain(|r| {
                let key = (r.jail.clone(), r.ip.clone());
                !manual.get(&key).is_some_and(|times| times.iter().any(|at| (at - r.banned_at).abs() <= 1))
            });
        }
        report.without_country += self.locate(&mut rows).await;
        report.archived += self.store.archive(&rows).await?;
        Ok(())
    }

    /// Places archived rows that were archived without a country.
    pub async fn backfill_geo(&self, limit: u32) -> Result<u64, HistoryError> {
        if !self.geo.is_configured() {
            return Ok(0);
        }
        let missing = self.store.missing_geo(limit).await?;
        if missing.is_empty() {
            return Ok(0);
        }
        let found: HashMap<String, Country> = match self.geo.countries(missing.iter().map(|(_, ip)| ip.as_str())).await
        {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "geo-service unavailable: country back-fill waits");
                return Ok(0);
            }
        };
        let fills: Vec<GeoFill> = missing.iter().map(|(id, ip)| Placement::of(found.get(ip)).fill(*id)).collect();
        self.store.fill_geo(&fills).await?;
        Ok(fills.len() as u64)
    }

    /// Deletes events older than the `history_retention` setting.
    pub async fn apply_retention(&self) -> Result<u64, HistoryError> {
        let retention = self.settings.get().await?.history_retention.as_secs();
        let before = self.clock.now() - i64::try_from(retention).unwrap_or(i64::MAX / 2);
        Ok(self.store.purge_history(before).await?)
    }

    /// Archives a ban or unban made through JailService, at once.
    pub async fn record_manual(&self, jail: &str, ip: &str, at: i64, ban_seconds: i64, event: Event) {
        let mut row = self.own_row(jail, ip, at, ban_seconds, event, Origin::Manual);
        self.locate(std::slice::from_mut(&mut row)).await;
        if let Err(error) = self.store.archive(&[row]).await {
            tracing::error!(%error, jail, ip, event = event.as_str(), "cannot archive the manual ban");
        }
    }

    /// Archives the bans or unbans a blocklist import made (`entries`, all
    /// at `at`), at once, with origin `blocklist` and the source's name.
    pub async fn record_blocklist(
        &self,
        jail: &str,
        source: &str,
        entries: &[String],
        at: i64,
        ban_seconds: i64,
        event: Event,
    ) {
        for chunk in entries.chunks(BLOCKLIST_ARCHIVE_CHUNK) {
            let mut rows: Vec<ArchivedBan> = chunk
                .iter()
                .map(|ip| ArchivedBan {
                    source: Some(source.to_owned()),
                    ..self.own_row(jail, ip, at, ban_seconds, event, Origin::Blocklist)
                })
                .collect();
            self.locate(&mut rows).await;
            if let Err(error) = self.store.archive(&rows).await {
                tracing::error!(%error, jail, source, event = event.as_str(), "cannot archive the blocklist's bans");
            }
        }
    }

    /// A row for a ban or unban made through this service.
    fn own_row(&self, jail: &str, ip: &str, at: i64, ban_seconds: i64, event: Event, origin: Origin) -> ArchivedBan {
        ArchivedBan {
            id: 0,
            jail: jail.to_owned(),
            ip: ip.to_owned(),
            banned_at: at,
            ban_seconds,
            ban_count: 1,
            origin,
            event,
            failures: 0,
            matches: "[]".into(),
            country_code: None,
            country_name: None,
            asn: None,
            as_org: None,
            archived_at: self.clock.now(),
            source: None,
        }
    }
}

/// Rows a blocklist import archives (and places) at a time.
const BLOCKLIST_ARCHIVE_CHUNK: usize = 5_000;

#[cfg(test)]
mod sync_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(s: &str) -> BanData {
        BanData::Whole(s.as_bytes().to_vec())
    }

    #[test]
    fn ban_data_is_bounded_and_tolerant() {
        assert_eq!(ban_data(&BanData::Null), Ok((0, "[]".into())));
        assert_eq!(ban_data(&whole("not json")), Err(Unreadable::NotJson));
        assert_eq!(ban_data(&BanData::Whole(b"{\"matches\": [\"\xff\xfe\"]}".to_vec())), Err(Unreadable::NotUtf8));
        assert_eq!(ban_data(&BanData::NotJson { bytes: 1 << 20 }), Err(Unreadable::NotJson));
        assert_eq!(ban_data(&BanData::TooLarge { bytes: 1 << 30 }), Err(Unreadable::TooLarge));
        let (failures, matches) =
            ban_data(&whole(r#"{"matches": [["2026-11-23 ", "auth failure from 1.2.3.4"]], "failures": 4}"#)).unwrap();
        assert_eq!(failures, 4);
        assert_eq!(matches, r#"["2026-11-23 auth failure from 1.2.3.4"]"#);
        let many: Vec<String> = (0..100).map(|i| format!("{i} {}", "x".repeat(1000))).collect();
        let data = serde_json::json!({"matches": many, "failures": 100}).to_string();
        let (_, matches) = ban_data(&whole(&data)).unwrap();
        let kept: Vec<String> = serde_json::from_str(&matches).unwrap();
        assert_eq!(kept.len(), MAX_MATCHES);
        assert!(
            kept[0].starts_with("80 ") && kept.iter().all(|l| l.chars().count() <= MAX_MATCH_CHARS),
            "the latest lines"
        );
    }

    #[test]
    fn a_ban_is_archived_if_the_same_time_or_a_manual_ban_within_a_second_is() {
        let mut bans: HashMap<String, Vec<(i64, Origin)>> = HashMap::new();
        bans.entry("192.0.2.1".into()).or_default().push((100, Origin::Fail2ban));
        bans.entry("192.0.2.2".into()).or_default().push((200, Origin::Manual));
        assert!(archived(&bans, "192.0.2.1", 100));
        assert!(!archived(&bans, "192.0.2.1", 101), "another ban of the same address");
        assert!(archived(&bans, "192.0.2.2", 201) && archived(&bans, "192.0.2.2", 199));
        assert!(!archived(&bans, "192.0.2.2", 202));
        assert!(!archived(&bans, "192.0.2.3", 100));
    }
}
