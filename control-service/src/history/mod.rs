//! The ban history archive: fail2ban's bans copied into the control
//! database before fail2ban purges them, with the country resolved at
//! archive time, and the dashboard queries over it.
//!
//! * Sync (the leader's `history_sync` job): reads fail2ban's `bans` table
//!   read-only from a stored cursor (its rowid; first run: the
//!   `history_backfill` window), in batches; each batch is placed through the geo-service and
//!   archived in one transaction. Re-running adds nothing: rows are unique
//!   on (jail, ip, banned_at, event). The geo-service being down archives
//!   rows without a country; `history_geo_backfill` fills them in later.
//! * Bans and unbans made through JailService are archived at once with
//!   origin `manual`.
//! * Retention: `history_retention` (the `history_retention` job).

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use crate::{
    clock::Clock,
    fail2ban::{Fail2ban, Fail2banError, db::Fail2banDb},
    geo_client::{Country, GeoClient},
    settings::SettingsStore,
    store::{
        StoreError,
        history::{ArchivedBan, GeoFill, HistoryStore},
    },
};

/// The newest ban time archived from fail2ban's `bans` table.
pub const FAIL2BAN_SOURCE: &str = "fail2ban";
/// The last rowid of fail2ban's `bans` table archived.
pub const FAIL2BAN_ROWID: &str = "fail2ban:rowid";
/// Rows read and archived per batch.
const BATCH: u32 = 5_000;
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
    pub read: u64,
    pub archived: u64,
    pub without_country: u64,
}

/// The archive and its sources.
#[derive(Debug, Clone)]
pub struct History {
    store: Arc<dyn HistoryStore>,
    fail2ban: Fail2ban,
    geo: GeoClient,
    settings: SettingsStore,
    clock: Arc<dyn Clock>,
    /// `--fail2ban-db`: read this file instead of asking fail2ban.
    db_path: Option<PathBuf>,
}

/// `{"matches": [...], "failures": n}` → (failures, bounded matches JSON).
fn ban_data(data: Option<&str>) -> (i32, String) {
    let Some(value) = data.and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()) else {
        return (0, "[]".into());
    };
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
    (failures, serde_json::to_string(&matches).unwrap_or_else(|_| "[]".into()))
}

fn place(row: &mut ArchivedBan, country: Option<&Country>) {
    match country {
        Some(c) => {
            row.country_code = Some(c.code.clone());
            row.country_name = Some(c.name.clone());
            row.asn = c.asn.map(i64::from);
            row.as_org = c.as_org.clone();
        }
        // Looked up, nobody knows: empty, so the back-fill does not retry it.
        None => {
            row.country_code = Some(String::new());
            row.country_name = Some(String::new());
        }
    }
}

impl History {
    pub fn new(
        store: Arc<dyn HistoryStore>,
        fail2ban: Fail2ban,
        geo: GeoClient,
        settings: SettingsStore,
        clock: Arc<dyn Clock>,
        db_path: Option<PathBuf>,
    ) -> Self {
        Self { store, fail2ban, geo, settings, clock, db_path }
    }

    pub fn store(&self) -> &Arc<dyn HistoryStore> {
        &self.store
    }

    async fn db_path(&self) -> Result<PathBuf, HistoryError> {
        if let Some(path) = &self.db_path {
            return Ok(path.clone());
        }
        match self.fail2ban.dbfile().await {
            Ok(Some(path)) => Ok(path),
            Ok(None) => Err(HistoryError::NoDatabase("fail2ban keeps no database (dbfile = :memory: or none)".into())),
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
        let mut ips: Vec<String> = rows.iter().map(|r| r.ip.clone()).collect();
        ips.sort_unstable();
        ips.dedup();
        match self.geo.countries(&ips).await {
            Ok(found) => {
                for row in rows.iter_mut() {
                    place(row, found.get(&row.ip));
                }
                0
            }
            Err(error) => {
                tracing::warn!(%error, rows = rows.len(), "geo-service unavailable: archiving without countries");
                rows.len() as u64
            }
        }
    }

    /// Copies new rows of fail2ban's `bans` table into the archive.
    pub async fn sync(&self) -> Result<SyncReport, HistoryError> {
        let path = self.db_path().await?;
        let db = Fail2banDb::open(&path)
            .await
            .map_err(|source| HistoryError::Fail2banDb { path: path.display().to_string(), source })?;
        let result = self.sync_from(&db, &path).await;
        db.close().await;
        result
    }

    async fn sync_from(&self, db: &Fail2banDb, path: &std::path::Path) -> Result<SyncReport, HistoryError> {
        let read_error = |source| HistoryError::Fail2banDb { path: path.display().to_string(), source };
        let now = self.clock.now();
        let stored_rowid = self.store.cursor(FAIL2BAN_ROWID).await?;
        let newest_seen = self.store.cursor(FAIL2BAN_SOURCE).await?;
        // Where to start: after the stored rowid; by time when there is none
        // (first run: the backfill window), or when fail2ban's table was
        // emptied and its rowids started again (then from the newest ban time
        // archived: the archive ignores repeats).
        let max_rowid = db.max_rowid().await.map_err(read_error)?;
        let (mut after, since) = match stored_rowid {
            Some(rowid) if rowid <= max_rowid => (rowid, i64::MIN),
            _ => {
                let since = match newest_seen {
                    Some(at) => at,
                    None => {
                        let window = self.settings.get().await?.history_backfill.as_secs();
                        now - i64::try_from(window).unwrap_or(i64::MAX / 2)
                    }
                };
                match db.first_rowid_since(since).await.map_err(read_error)? {
                    Some(first) => (first - 1, since),
                    None => {
                        self.store.set_cursor(FAIL2BAN_ROWID, max_rowid, now).await?;
                        self.store.set_cursor(FAIL2BAN_SOURCE, newest_seen.unwrap_or(since), now).await?;
                        return Ok(SyncReport::default());
                    }
                }
            }
        };
        let mut report = SyncReport::default();
        let mut newest = newest_seen.unwrap_or(i64::MIN);
        loop {
            let batch = db.bans_after(after, since, BATCH).await.map_err(read_error)?;
            let Some(last) = batch.last() else { break };
            after = last.rowid;
            newest = batch.iter().map(|b| b.timeofban).fold(newest, i64::max);
            report.read += batch.len() as u64;
            let mut rows: Vec<ArchivedBan> = batch
                .iter()
                .map(|b| {
                    let (failures, matches) = ban_data(b.data.as_deref());
                    ArchivedBan {
                        id: 0,
                        jail: b.jail.clone(),
                        ip: b.ip.clone(),
                        banned_at: b.timeofban,
                        ban_seconds: b.bantime,
                        ban_count: i32::try_from(b.bancount).unwrap_or(i32::MAX),
                        origin: "fail2ban".into(),
                        event: "ban".into(),
                        failures,
                        matches,
                        country_code: None,
                        country_name: None,
                        asn: None,
                        as_org: None,
                        archived_at: now,
                    }
                })
                .collect();
            // A ban made through JailService is archived at once as `manual`,
            // with fail2ban's ban time as `--with-time` prints it (whole
            // seconds, floored); fail2ban's database rounds. The same ban is
            // not archived twice.
            let (low, high) =
                rows.iter().fold((i64::MAX, i64::MIN), |(l, h), r| (l.min(r.banned_at), h.max(r.banned_at)));
            let mut manual: HashMap<(String, String), Vec<i64>> = HashMap::new();
            for (jail, ip, at) in self.store.manual_bans(low - 1, high + 1).await? {
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
            // Advance only after the batch is safely archived.
            self.store.set_cursor(FAIL2BAN_ROWID, after, now).await?;
            self.store.set_cursor(FAIL2BAN_SOURCE, newest, now).await?;
            if batch.len() < BATCH as usize {
                break;
            }
        }
        Ok(report)
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
        let mut ips: Vec<String> = missing.iter().map(|(_, ip)| ip.clone()).collect();
        ips.sort_unstable();
        ips.dedup();
        let found: HashMap<String, Country> = match self.geo.countries(&ips).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "geo-service unavailable: country back-fill waits");
                return Ok(0);
            }
        };
        let fills: Vec<GeoFill> = missing
            .iter()
            .map(|(id, ip)| match found.get(ip) {
                Some(c) => GeoFill {
                    id: *id,
                    country_code: c.code.clone(),
                    country_name: c.name.clone(),
                    asn: c.asn.map(i64::from),
                    as_org: c.as_org.clone(),
                },
                None => GeoFill {
                    id: *id,
                    country_code: String::new(),
                    country_name: String::new(),
                    asn: None,
                    as_org: None,
                },
            })
            .collect();
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
    pub async fn record_manual(&self, jail: &str, ip: &str, at: i64, ban_seconds: i64, event: &str) {
        let mut row = ArchivedBan {
            id: 0,
            jail: jail.to_owned(),
            ip: ip.to_owned(),
            banned_at: at,
            ban_seconds,
            ban_count: 1,
            origin: "manual".into(),
            event: event.to_owned(),
            failures: 0,
            matches: "[]".into(),
            country_code: None,
            country_name: None,
            asn: None,
            as_org: None,
            archived_at: self.clock.now(),
        };
        self.locate(std::slice::from_mut(&mut row)).await;
        if let Err(error) = self.store.archive(&[row]).await {
            tracing::error!(%error, jail, ip, event, "cannot archive the manual ban");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_data_is_bounded_and_tolerant() {
        assert_eq!(ban_data(None), (0, "[]".into()));
        assert_eq!(ban_data(Some("not json")), (0, "[]".into()));
        let (failures, matches) =
            ban_data(Some(r#"{"matches": [["2026-11-23 ", "auth failure from 1.2.3.4"]], "failures": 4}"#));
        assert_eq!(failures, 4);
        assert_eq!(matches, r#"["2026-11-23 auth failure from 1.2.3.4"]"#);
        let many: Vec<String> = (0..100).map(|i| format!("{i} {}", "x".repeat(1000))).collect();
        let data = serde_json::json!({"matches": many, "failures": 100}).to_string();
        let (_, matches) = ban_data(Some(&data));
        let kept: Vec<String> = serde_json::from_str(&matches).unwrap();
        assert_eq!(kept.len(), MAX_MATCHES);
        assert!(
            kept[0].starts_with("80 ") && kept.iter().all(|l| l.chars().count() <= MAX_MATCH_CHARS),
            "the latest lines"
        );
    }
}
