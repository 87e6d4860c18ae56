//! Ban times in Unix seconds, whatever fail2ban's time zone.
//!
//! `get <jail> banip --with-time` prints each ban's start in fail2ban's
//! local time, floored to the second, and no command answers with the
//! epoch. fail2ban's database has it: `bans.timeofban` (rounded to the
//! second). So a ban's time is taken from the database row of the same
//! jail and IP whose time, shifted by a whole time-zone offset (a multiple
//! of 15 minutes, at most 15 hours), is what fail2ban printed. The offset
//! found most often is remembered, for bans the database does not have yet
//! (fail2ban writes it a moment after the ban) or when it cannot be read.
//! Only before any offset was learned is fail2ban's local time read in the
//! service's own zone.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use super::db::Fail2banDb;
use chrono::{Local, NaiveDateTime, TimeZone};

/// Time-zone offsets are whole quarter hours.
const QUARTER_HOUR: i64 = 900;
/// Largest offset from UTC (UTC+14, with slack).
pub const MAX_OFFSET: i64 = 15 * 3600;

/// A line of `--with-time`, its start still in fail2ban's local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBan {
    pub ip: String,
    /// fail2ban's local wall-clock time, read as if it were UTC.
    pub local: i64,
    pub ban_seconds: i64,
}

/// How a ban time was found (for the log and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    Database,
    LearnedOffset,
    ServiceZone,
}

/// Reads fail2ban's database for ban times and remembers fail2ban's offset.
#[derive(Debug, Default)]
pub struct BanTimes {
    /// `--fail2ban-db`; otherwise fail2ban is asked (`get dbfile`).
    configured: Option<PathBuf>,
    pool: tokio::sync::Mutex<Option<Fail2banDb>>,
    /// fail2ban's offset from UTC in seconds, as last learned.
    offset: Mutex<Option<i64>>,
    /// When opening the database failed last.
    failed_at: Mutex<Option<Instant>>,
}

/// How long a database that could not be opened is left alone.
const RETRY_OPEN: Duration = Duration::from_secs(60);

impl BanTimes {
    pub fn new(configured: Option<PathBuf>) -> Self {
        Self { configured, ..Self::default() }
    }

    pub fn configured(&self) -> Option<&PathBuf> {
        self.configured.as_ref()
    }

    pub fn learned_offset(&self) -> Option<i64> {
        *self.offset.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn learn(&self, offset: i64) {
        let mut slot = self.offset.lock().unwrap_or_else(PoisonError::into_inner);
        if *slot != Some(offset) {
            tracing::info!(offset_seconds = offset, "fail2ban's UTC offset learned from its database");
            *slot = Some(offset);
        }
    }

    /// The database opened before, if any.
    pub async fn cached(&self) -> Option<Fail2banDb> {
        self.pool.lock().await.clone()
    }

    /// Opens fail2ban's database read-only. A failure is logged and not
    /// retried for a minute.
    pub async fn open(&self, path: &Path) -> Option<Fail2banDb> {
        if path.as_os_str() == ":memory:" {
            return None;
        }
        let mut slot = self.pool.lock().await;
        if let Some(pool) = slot.as_ref() {
            return Some(pool.clone());
        }
        {
            let failed = self.failed_at.lock().unwrap_or_else(PoisonError::into_inner);
            if failed.is_some_and(|at| at.elapsed() < RETRY_OPEN) {
                return None;
            }
        }
        match Fail2banDb::open(path).await {
            Ok(pool) => {
                *slot = Some(pool.clone());
                Some(pool)
            }
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "cannot open fail2ban's database for ban times");
                *self.failed_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                None
            }
        }
    }

    /// Forgets the open database (after an error: it is opened again next time).
    pub async fn reset(&self) {
        if let Some(db) = self.pool.lock().await.take() {
            db.close().await;
        }
    }

    /// Unix times for `bans`, with `rows` from the database (empty when it
    /// cannot be read).
    pub fn resolve(&self, bans: &[LocalBan], rows: &HashMap<String, Vec<i64>>) -> Vec<(i64, TimeSource)> {
        // The offset most bans agree on.
        let mut votes: HashMap<i64, usize> = HashMap::new();
        for ban in bans {
            for &at in rows.get(&ban.ip).map(Vec::as_slice).unwrap_or_default() {
                if let Some(offset) = offset_of(ban.local, at) {
                    *votes.entry(offset).or_default() += 1;
                }
            }
        }
        let voted = votes.into_iter().max_by_key(|&(offset, n)| (n, -offset.abs())).map(|(offset, _)| offset);
        if let Some(offset) = voted {
            self.learn(offset);
        }
        let offset = voted.or_else(|| self.learned_offset());
        bans.iter()
            .map(|ban| {
                let candidates = rows.get(&ban.ip).map(Vec::as_slice).unwrap_or_default();
                // A row at the usual offset first, then one at any offset
                // (a ban from the other side of a daylight-saving change).
                let exact = offset.and_then(|o| candidates.iter().copied().find(|&at| (ban.local - o - at).abs() <= 1));
                let any = || candidates.iter().copied().filter(|&at| offset_of(ban.local, at).is_some()).max();
                match exact.or_else(any) {
                    Some(at) => (at, TimeSource::Database),
                    None => match offset {
                        Some(o) => (ban.local - o, TimeSource::LearnedOffset),
                        None => (service_zone(ban.local), TimeSource::ServiceZone),
                    },
                }
            })
            .collect()
    }
}

/// The time-zone offset that makes fail2ban's printed `local` time out of
/// the database's `at` (floored versus rounded: one second either way).
fn offset_of(local: i64, at: i64) -> Option<i64> {
    let diff = local - at;
    let offset = (diff as f64 / QUARTER_HOUR as f64).round() as i64 * QUARTER_HOUR;
    ((diff - offset).abs() <= 1 && offset.abs() <= MAX_OFFSET).then_some(offset)
}

/// `local` read in the service's own time zone.
fn service_zone(local: i64) -> i64 {
    let Some(naive) = chrono::DateTime::from_timestamp(local, 0).map(|d| d.naive_utc()) else { return local };
    Local.from_local_datetime(&naive).earliest().map_or(local, |d| d.timestamp())
}

/// Parses fail2ban's `%Y-%m-%d %H:%M:%S` into seconds, as if it were UTC.
pub fn parse_local(text: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok().map(|n| n.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(ip: &str, local: i64) -> LocalBan {
        LocalBan { ip: ip.into(), local, ban_seconds: 600 }
    }

    #[test]
    fn offsets_are_whole_quarter_hours_within_a_second() {
        assert_eq!(offset_of(1_000 + 9 * 3600, 1_000), Some(9 * 3600));
        assert_eq!(offset_of(1_000 + 9 * 3600 - 1, 1_000), Some(9 * 3600)); // floored vs rounded
        assert_eq!(offset_of(1_000 + 5 * 3600 + 1800, 1_000), Some(5 * 3600 + 1800));
        assert_eq!(offset_of(1_000 - 3600, 1_000), Some(-3600));
        assert_eq!(offset_of(1_000 + 100, 1_000), None);
        assert_eq!(offset_of(1_000 + 20 * 3600, 1_000), None);
    }

    #[test]
    fn database_times_win_and_teach_the_offset() {
        let times = BanTimes::default();
        let tokyo = 9 * 3600;
        let bans =
            [ban("192.0.2.1", 10_000 + tokyo - 1), ban("192.0.2.2", 20_000 + tokyo), ban("192.0.2.3", 30_000 + tokyo)];
        let rows =
            HashMap::from([("192.0.2.1".to_owned(), vec![10_000, 5_000]), ("192.0.2.2".to_owned(), vec![20_000])]);
        let resolved = times.resolve(&bans, &rows);
        assert_eq!(resolved[0], (10_000, TimeSource::Database));
        assert_eq!(resolved[1], (20_000, TimeSource::Database));
        // Not in the database yet: the learned offset.
        assert_eq!(resolved[2], (30_000, TimeSource::LearnedOffset));
        assert_eq!(times.learned_offset(), Some(tokyo));
        // Later, without the database: still the learned offset.
        assert_eq!(times.resolve(&bans[2..], &HashMap::new()), vec![(30_000, TimeSource::LearnedOffset)]);
    }

    #[test]
    fn without_anything_learned_the_service_zone_reads_it() {
        let times = BanTimes::default();
        let local = parse_local("2026-11-23 16:17:36").unwrap();
        let (at, source) = times.resolve(&[ban("192.0.2.1", local)], &HashMap::new())[0];
        assert_eq!(source, TimeSource::ServiceZone);
        let naive = NaiveDateTime::parse_from_str("2026-11-23 16:17:36", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(at, Local.from_local_datetime(&naive).earliest().unwrap().timestamp());
    }
}
