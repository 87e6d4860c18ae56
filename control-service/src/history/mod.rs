//! The ban history archive: fail2ban's bans copied into the control
//! database before fail2ban purges them, with the host they come from and
//! the country resolved at archive time, and the dashboard queries over it.
//!
//! * Sync of the control-service's own fail2ban (the leader's
//!   `history_sync` job, host [`LOCAL_HOST`]): fail2ban's `bans` table is
//!   read by [`bangui_fail2ban::history`] (the no-loss rules: rowid reuse,
//!   bounded batches, unreadable rows; fail2ban-agent reads its host's
//!   table with the same code into its outbox). Each batch is placed
//!   through the geo-service and archived in one transaction with the
//!   rowid cursor. Re-running adds nothing: rows are unique on (host, jail,
//!   ip, banned_at, event). The geo-service being down archives rows
//!   without a country; `history_geo_backfill` fills them in later.
//! * The fleet's hosts deliver their events from their agents' outboxes
//!   (`crate::hosts::events`), placed the same way ([`History::place`]).
//! * A row whose `data` is not UTF-8, not JSON or too large is archived
//!   with what can be read (jail, ip, times, bantime, bancount), counted in
//!   `control_history_unreadable_rows_total{reason}` and logged.
//! * fail2ban without a database (`dbfile = :memory:`): said once in the
//!   log; the job's runs are recorded as `skipped`.
//! * Bans and unbans made through JailService are archived at once with
//!   origin `manual` and their host; those of blocklist imports with origin
//!   `blocklist` and the source's name. The sync (and a host's delivery)
//!   does not archive them again.
//! * Retention: `history_retention` (the `history_retention` job).
//! * The dashboard's questions: [`queries`].

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
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
        history::{ArchivedBan, GeoFill, LOCAL_HOST},
    },
};
use bangui_fail2ban::{
    Fail2ban, Fail2banError,
    db::Fail2banDb,
    history::{self as reader, BanRow, Cursors, HistorySink, KnownBan, SyncParams},
};

pub mod queries;

/// The newest ban time archived from fail2ban's `bans` table.
pub const FAIL2BAN_SOURCE: &str = "fail2ban";
/// The last rowid of fail2ban's `bans` table read.
pub const FAIL2BAN_ROWID: &str = "fail2ban:rowid";
/// When the last complete sync began (this service's clock).
pub const FAIL2BAN_CHECKED: &str = "fail2ban:checked";
pub use bangui_fail2ban::history::RECHECK_OVERLAP;

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
    /// The host `local` is served (see [`History::with_local`]).
    local: bool,
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
        Self {
            store,
            fail2ban,
            geo,
            settings,
            clock,
            metrics: Metrics::new(),
            no_database_said: Arc::default(),
            local: true,
        }
    }

    /// Whether the host `local` is served (`--local-fail2ban`); without it
    /// the sync has nothing to read (each agent delivers its host's history).
    #[must_use]
    pub fn with_local(mut self, local: bool) -> Self {
        self.local = local;
        self
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
    /// geo-service cannot be asked. Returns how many stayed unplaced.
    pub async fn place(&self, rows: &mut [ArchivedBan]) -> u64 {
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

    /// Counts a row archived without its log lines.
    pub fn unreadable_row(&self, reason: &'static str) {
        self.metrics.history_unreadable_row(reason);
    }

    /// This service's clock (Unix seconds).
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Copies the bans of fail2ban's `bans` table the archive lacks.
    pub async fn sync(&self) -> Result<SyncOutcome, HistoryError> {
        if !self.local {
            return Ok(SyncOutcome::Skipped(
                "no local fail2ban (--local-fail2ban=false): each host's agent delivers its history".into(),
            ));
        }
        let Some(path) = self.db_path().await? else {
            return Ok(SyncOutcome::Skipped("fail2ban keeps no database (dbfile = :memory: or none)".into()));
        };
        let db = Fail2banDb::open(&path)
            .await
            .map_err(|source| HistoryError::Fail2banDb { path: path.display().to_string(), source })?;
        let now = self.clock.now();
        let result = async {
            let window = self.settings.get().await?.history_backfill.as_secs();
            let backfill_from = now - i64::try_from(window).unwrap_or(i64::MAX / 2);
            let sink = LocalSink { history: self, now, without_country: AtomicU64::new(0) };
            match reader::sync(&db, &sink, SyncParams::new(now, backfill_from)).await {
                Ok(read) => Ok(SyncReport {
                    read: read.read,
                    archived: read.taken,
                    without_country: sink.without_country.load(Ordering::Relaxed),
                    unreadable: read.unreadable,
                    rechecked: read.rechecked,
                }),
                Err(reader::SyncError::Read(source)) => {
                    Err(HistoryError::Fail2banDb { path: path.display().to_string(), source })
                }
                Err(reader::SyncError::Sink(error)) => Err(error),
            }
        }
        .await;
        db.close().await;
        result.map(SyncOutcome::Synced)
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

    /// Archives a ban or unban made through JailService on `host` (a host
    /// id, or [`LOCAL_HOST`]), at once.
    pub async fn record_manual(&self, host: &str, jail: &str, ip: &str, at: i64, ban_seconds: i64, event: Event) {
        let mut row = self.own_row(host, jail, ip, at, ban_seconds, event, Origin::Manual);
        self.place(std::slice::from_mut(&mut row)).await;
        if let Err(error) = self.store.archive(&[row]).await {
            tracing::error!(%error, jail, ip, event = event.as_str(), "cannot archive the manual ban");
        }
    }

    /// Archives the bans or unbans a blocklist import made on `host`
    /// (`entries`, all at `at`), at once, with origin `blocklist` and the
    /// source's name.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_blocklist(
        &self,
        host: &str,
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
                    ..self.own_row(host, jail, ip, at, ban_seconds, event, Origin::Blocklist)
                })
                .collect();
            self.place(&mut rows).await;
            if let Err(error) = self.store.archive(&rows).await {
                tracing::error!(%error, jail, source, event = event.as_str(), "cannot archive the blocklist's bans");
            }
        }
    }

    /// A row for a ban or unban made through this service.
    #[allow(clippy::too_many_arguments)]
    fn own_row(
        &self,
        host: &str,
        jail: &str,
        ip: &str,
        at: i64,
        ban_seconds: i64,
        event: Event,
        origin: Origin,
    ) -> ArchivedBan {
        ArchivedBan {
            id: 0,
            host: host.to_owned(),
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

/// The local fail2ban's rows, archived as host [`LOCAL_HOST`].
struct LocalSink<'a> {
    history: &'a History,
    /// When the sync began.
    now: i64,
    without_country: AtomicU64,
}

impl LocalSink<'_> {
    /// An archive row of the local fail2ban's `row`.
    fn row(&self, row: BanRow) -> ArchivedBan {
        if let Some(reason) = row.unreadable {
            self.history.unreadable_row(reason.label());
        }
        ArchivedBan {
            id: 0,
            host: LOCAL_HOST.to_owned(),
            jail: row.jail,
            ip: row.ip,
            banned_at: row.banned_at,
            ban_seconds: row.ban_seconds,
            ban_count: row.ban_count,
            origin: Origin::Fail2ban,
            event: Event::Ban,
            failures: row.failures,
            matches: serde_json::to_string(&row.matches).unwrap_or_else(|_| "[]".into()),
            country_code: None,
            country_name: None,
            asn: None,
            as_org: None,
            archived_at: self.now,
            source: None,
        }
    }
}

#[async_trait::async_trait]
impl HistorySink for LocalSink<'_> {
    type Error = HistoryError;

    async fn cursors(&self) -> Result<Cursors, HistoryError> {
        let store = &self.history.store;
        Ok(Cursors {
            rowid: store.cursor(FAIL2BAN_ROWID).await?,
            checked: store.cursor(FAIL2BAN_CHECKED).await?,
            newest: store.cursor(FAIL2BAN_SOURCE).await?,
        })
    }

    async fn known(&self, jail: &str, from: i64, to: i64) -> Result<Vec<KnownBan>, HistoryError> {
        let bans = self.history.store.jail_bans(LOCAL_HOST, jail, from, to).await?;
        Ok(bans
            .into_iter()
            .map(|(ip, banned_at, origin)| KnownBan { ip, banned_at, own: origin != Origin::Fail2ban })
            .collect())
    }

    async fn take(&self, batch: Vec<BanRow>, rowid: Option<i64>) -> Result<u64, HistoryError> {
        let mut rows: Vec<ArchivedBan> = batch.into_iter().map(|row| self.row(row)).collect();
        drop_own_bans(self.history.store.as_ref(), LOCAL_HOST, &mut rows).await?;
        self.without_country.fetch_add(self.history.place(&mut rows).await, Ordering::Relaxed);
        let cursors: Vec<(&str, i64)> = rowid.map(|rowid| (FAIL2BAN_ROWID, rowid)).into_iter().collect();
        Ok(self.history.store.archive_with_cursors(&rows, &cursors, self.now).await?)
    }

    async fn finish(&self, done: Cursors) -> Result<(), HistoryError> {
        let store = &self.history.store;
        if let Some(rowid) = done.rowid {
            store.set_cursor(FAIL2BAN_ROWID, rowid, self.now).await?;
        }
        if let Some(newest) = done.newest {
            store.set_cursor(FAIL2BAN_SOURCE, newest, self.now).await?;
        }
        store.set_cursor(FAIL2BAN_CHECKED, self.now, self.now).await?;
        Ok(())
    }
}

/// Drops from `rows` (fail2ban's rows of `host`) the bans made through
/// this service, which were archived at once as `manual` or `blocklist`
/// with fail2ban's ban time as `--with-time` prints it (whole seconds,
/// floored; fail2ban's database rounds): the same ban is not archived twice.
pub(crate) async fn drop_own_bans(
    store: &dyn HistoryStore,
    host: &str,
    rows: &mut Vec<ArchivedBan>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let (low, high) = rows.iter().fold((i64::MAX, i64::MIN), |(l, h), r| (l.min(r.banned_at), h.max(r.banned_at)));
    let mut own: HashMap<(String, String), Vec<i64>> = HashMap::new();
    for (jail, ip, at) in store.manual_bans(host, low.saturating_sub(1), high.saturating_add(1)).await? {
        own.entry((jail, ip)).or_default().push(at);
    }
    if !own.is_empty() {
        rows.retain(|r| {
            let key = (r.jail.clone(), r.ip.clone());
            !own.get(&key).is_some_and(|times| times.iter().any(|at| (at - r.banned_at).abs() <= 1))
        });
    }
    Ok(())
}

#[cfg(test)]
mod sync_tests;
