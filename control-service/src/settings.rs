//! Runtime settings: typed, validated, kept in the control database (one
//! row per key, as text) and shared by every replica. A key never set has
//! its default; a key this version does not know is ignored.

use std::{sync::Arc, time::Duration};

use croner::parser::{CronParser, Seconds, Year};

use crate::{
    clock::Clock,
    error::InvalidArgument,
    store::{SettingsStore, StoreError},
};

const DAY: u64 = 86_400;

/// The job schedules: six-field cron in UTC, seconds first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedules {
    pub session_cleanup: String,
    pub geo_cache_purge: String,
    pub geo_re_resolve: String,
    pub history_sync: String,
    pub history_geo_backfill: String,
    pub history_retention: String,
    /// A blocklist source's schedule when it names none.
    pub blocklist_import: String,
}

/// Every runtime setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub session_duration: Duration,
    pub geo_cache_retention: Duration,
    pub history_retention: Duration,
    pub history_backfill: Duration,
    pub schedules: Schedules,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session_duration: Duration::from_secs(60 * 60),
            geo_cache_retention: Duration::from_secs(90 * DAY),
            history_retention: Duration::from_secs(365 * DAY),
            history_backfill: Duration::from_secs(7 * DAY),
            schedules: Schedules {
                session_cleanup: "0 0 * * * *".into(),
                geo_cache_purge: "0 30 3 * * *".into(),
                geo_re_resolve: "0 */10 * * * *".into(),
                history_sync: "0 * * * * *".into(),
                history_geo_backfill: "0 5-55/10 * * * *".into(),
                history_retention: "0 0 4 * * *".into(),
                blocklist_import: "0 15 */6 * * *".into(),
            },
        }
    }
}

/// A change: `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsUpdate {
    pub session_duration: Option<Duration>,
    pub geo_cache_retention: Option<Duration>,
    pub history_retention: Option<Duration>,
    pub history_backfill: Option<Duration>,
    pub session_cleanup_schedule: Option<String>,
    pub geo_cache_purge_schedule: Option<String>,
    pub geo_re_resolve_schedule: Option<String>,
    pub history_sync_schedule: Option<String>,
    pub history_geo_backfill_schedule: Option<String>,
    pub history_retention_schedule: Option<String>,
    pub blocklist_import_schedule: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_range(field: &'static str, value: Duration, min: Duration, max: Duration) -> Result<(), InvalidArgument> {
    if value < min || value > max || value.subsec_nanos() != 0 {
        return Err(InvalidArgument::new(
            field,
            format!("must be whole seconds from {}s to {}s", min.as_secs(), max.as_secs()),
        ));
    }
    Ok(())
}

/// Parses a six-field cron pattern (seconds first) the way the scheduler
/// (tokio-cron-scheduler) does.
pub fn parse_cron(pattern: &str) -> Result<croner::Cron, croner::errors::CronError> {
    CronParser::builder().seconds(Seconds::Required).year(Year::Disallowed).dom_and_dow(true).build().parse(pattern)
}

/// A six-field cron pattern (seconds first), as the scheduler reads it.
/// Longest cron pattern accepted (six fields with lists fit easily).
const MAX_CRON_LEN: usize = 200;

pub fn check_cron(field: &'static str, pattern: &str) -> Result<(), InvalidArgument> {
    // Checked first: the pattern is echoed in the error.
    if pattern.len() > MAX_CRON_LEN {
        return Err(InvalidArgument::new(field, format!("longer than {MAX_CRON_LEN} characters")));
    }
    parse_cron(pattern)
        .map(drop)
        .map_err(|e| InvalidArgument::new(field, format!("{pattern:?} is not a six-field cron pattern: {e}")))
}

impl SettingsUpdate {
    /// Validates every given value; the key/value rows to store.
    fn rows(&self) -> Result<Vec<(String, String)>, InvalidArgument> {
        let mut rows = Vec::new();
        let mut duration = |field: &'static str, value: Option<Duration>, min: u64, max: u64| {
            if let Some(v) = value {
                check_range(field, v, Duration::from_secs(min), Duration::from_secs(max))?;
                rows.push((field.to_owned(), v.as_secs().to_string()));
            }
            Ok::<_, InvalidArgument>(())
        };
        duration("session_duration", self.session_duration, 1, 30 * DAY)?;
        duration("geo_cache_retention", self.geo_cache_retention, DAY, 3650 * DAY)?;
        duration("history_retention", self.history_retention, DAY, 3650 * DAY)?;
        duration("history_backfill", self.history_backfill, 0, 365 * DAY)?;
        for (field, value) in [
            ("session_cleanup_schedule", &self.session_cleanup_schedule),
            ("geo_cache_purge_schedule", &self.geo_cache_purge_schedule),
            ("geo_re_resolve_schedule", &self.geo_re_resolve_schedule),
            ("history_sync_schedule", &self.history_sync_schedule),
            ("history_geo_backfill_schedule", &self.history_geo_backfill_schedule),
            ("history_retention_schedule", &self.history_retention_schedule),
            ("blocklist_import_schedule", &self.blocklist_import_schedule),
        ] {
            if let Some(pattern) = value {
                check_cron(field, pattern)?;
                rows.push((field.to_owned(), pattern.trim().to_owned()));
            }
        }
        if rows.is_empty() {
            return Err(InvalidArgument::new("settings", "nothing to change: give at least one setting"));
        }
        Ok(rows)
    }
}

impl Settings {
    /// Defaults overlaid with the stored rows.
    fn from_rows(rows: &[(String, String)]) -> Result<Self, StoreError> {
        let mut settings = Settings::default();
        for (key, value) in rows {
            let seconds = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| StoreError::Corrupt(format!("setting {key} = {value:?}")))
            };
            match key.as_str() {
                "session_duration" => settings.session_duration = seconds()?,
                "geo_cache_retention" => settings.geo_cache_retention = seconds()?,
                "history_retention" => settings.history_retention = seconds()?,
                "history_backfill" => settings.history_backfill = seconds()?,
                "session_cleanup_schedule" => settings.schedules.session_cleanup = value.clone(),
                "geo_cache_purge_schedule" => settings.schedules.geo_cache_purge = value.clone(),
                "geo_re_resolve_schedule" => settings.schedules.geo_re_resolve = value.clone(),
                "history_sync_schedule" => settings.schedules.history_sync = value.clone(),
                "history_geo_backfill_schedule" => settings.schedules.history_geo_backfill = value.clone(),
                "history_retention_schedule" => settings.schedules.history_retention = value.clone(),
                "blocklist_import_schedule" => settings.schedules.blocklist_import = value.clone(),
                // Written by a newer version: not ours to judge.
                _ => {}
            }
        }
        Ok(settings)
    }
}

/// Reads and changes the runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    store: Arc<dyn SettingsStore>,
    clock: Arc<dyn Clock>,
}

impl RuntimeSettings {
    pub fn new(store: Arc<dyn SettingsStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub async fn get(&self) -> Result<Settings, StoreError> {
        Settings::from_rows(&self.store.settings().await?)
    }

    /// Validates all of `update`, then stores it in one transaction.
    pub async fn update(&self, update: &SettingsUpdate) -> Result<Settings, SettingsError> {
        let rows = update.rows()?;
        self.store.put_settings(&rows, self.clock.now()).await?;
        Ok(self.get().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let rows = vec![
            ("session_duration".to_owned(), "1800".to_owned()),
            ("history_sync_schedule".to_owned(), "*/30 * * * * *".to_owned()),
            ("from_the_future".to_owned(), "x".to_owned()),
        ];
        let settings = Settings::from_rows(&rows).unwrap();
        assert_eq!(settings.session_duration, Duration::from_secs(1800));
        assert_eq!(settings.schedules.history_sync, "*/30 * * * * *");
        assert_eq!(settings.geo_cache_retention, Duration::from_secs(90 * DAY));
        assert!(Settings::from_rows(&[("session_duration".into(), "soon".into())]).is_err());
    }

    #[test]
    fn updates_are_validated_field_by_field() {
        let field = |u: SettingsUpdate| u.rows().unwrap_err().field;
        assert_eq!(field(SettingsUpdate::default()), "settings");
        let u = SettingsUpdate { session_duration: Some(Duration::ZERO), ..Default::default() };
        assert_eq!(field(u), "session_duration");
        let u = SettingsUpdate { history_retention: Some(Duration::from_secs(10)), ..Default::default() };
        assert_eq!(field(u), "history_retention");
        let u = SettingsUpdate { geo_re_resolve_schedule: Some("*/10 * * * *".into()), ..Default::default() };
        assert_eq!(field(u), "geo_re_resolve_schedule", "five fields are refused: seconds come first");
        let u = SettingsUpdate { history_sync_schedule: Some("0 * * * * *".into()), ..Default::default() };
        assert_eq!(u.rows().unwrap(), vec![("history_sync_schedule".to_owned(), "0 * * * * *".to_owned())]);
        for pattern in [&Settings::default().schedules.session_cleanup, "0 30 3 * * *", "0 */10 * * * *"] {
            assert!(check_cron("s", pattern).is_ok(), "{pattern}");
        }
        let long = format!("0 0 0 * * {}", "1,".repeat(200));
        let error = check_cron("history_sync_schedule", &long).unwrap_err();
        assert!(error.reason.contains("longer than 200") && !error.reason.contains("1,1,"), "{error}");
    }
}
