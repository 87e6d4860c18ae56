//! The ban history archive (`ban_history`), the local sync's cursors
//! (`history_cursors`) and the per-host delivery cursors of the agents'
//! outboxes (`host_event_cursors`).
//!
//! The same SQL on both backends: fixed statements are constants here, and
//! the queries a [`HistoryFilter`] shapes are built here as text with
//! numbered parameters ([`Built`]); `sql.rs` binds and runs them on
//! either backend. What differs is how many rows one archive insert
//! carries (`Dialect::ROWS_PER_INSERT`) and how it writes its placeholders
//! (`Dialect::placeholder`).

mod sql;

#[cfg(test)]
mod contract;

use super::{Dialect, StoreError};
use crate::kinds::{Event, Origin};

/// One archived event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ArchivedBan {
    #[sqlx(default)]
    pub id: i64,
    /// The host whose fail2ban it comes from: a host id, or [`LOCAL_HOST`].
    pub host: String,
    pub jail: String,
    pub ip: String,
    /// Unix seconds.
    pub banned_at: i64,
    /// -1: permanent.
    pub ban_seconds: i64,
    pub ban_count: i32,
    #[sqlx(try_from = "String")]
    pub origin: Origin,
    #[sqlx(try_from = "String")]
    pub event: Event,
    pub failures: i32,
    /// JSON array of log lines.
    pub matches: String,
    /// `None`: not looked up yet; `Some("")`: looked up, unknown.
    pub country_code: Option<String>,
    pub country_name: Option<String>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
    pub archived_at: i64,
    /// The blocklist source of a ban of origin `blocklist`.
    #[sqlx(default)]
    pub source: Option<String>,
}

/// The host of the control-service's own fail2ban (`--fail2ban-socket`),
/// and of every row archived before the fleet.
pub const LOCAL_HOST: &str = "local";

/// Which rows a query looks at. `from` is inclusive, `to` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// One host's rows (a host id or [`LOCAL_HOST`]).
    pub host: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub jail: Option<String>,
    pub origin: Option<Origin>,
    pub country: Option<String>,
    pub ip_prefix: Option<String>,
}

/// A bound value of a built query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Int(i64),
    Text(String),
    /// A text NULL.
    Null,
    /// An integer NULL (PostgreSQL types NULLs).
    NullInt,
}

/// A statement built at run time, and what to bind to its `$1, $2, …`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Built {
    /// Appends `value` as the next parameter; returns its placeholder.
    pub fn param(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// ` WHERE …` of `filter` (or nothing), appended to the text. Every
    /// condition is a range or an equality on an indexed column.
    fn push_where(&mut self, filter: &HistoryFilter) {
        let mut conditions = Vec::new();
        if let Some(host) = &filter.host {
            conditions.push(format!("host = {}", self.param(Param::Text(host.clone()))));
            if host != LOCAL_HOST {
                // Written out, so the planner may use the partial index of
                // agent hosts (`ban_history_host_time`): it cannot see that
                // a bound parameter is not 'local'.
                conditions.push(format!("host <> '{LOCAL_HOST}'"));
            }
        }
        if let Some(from) = filter.from {
            conditions.push(format!("banned_at >= {}", self.param(Param::Int(from))));
        }
        if let Some(to) = filter.to {
            conditions.push(format!("banned_at < {}", self.param(Param::Int(to))));
        }
        if let Some(jail) = &filter.jail {
            conditions.push(format!("jail = {}", self.param(Param::Text(jail.clone()))));
        }
        if let Some(origin) = filter.origin {
            conditions.push(format!("origin = {}", self.param(Param::Text(origin.as_str().to_owned()))));
        }
        if let Some(country) = &filter.country {
            conditions.push(format!("country_code = {}", self.param(Param::Text(country.clone()))));
        }
        if let Some(prefix) = &filter.ip_prefix {
            // A byte range instead of LIKE: both backends use the ip index.
            let low = self.param(Param::Text(prefix.clone()));
            let high = self.param(Param::Text(format!("{prefix}\u{10FFFF}")));
            conditions.push(format!("ip >= {low} AND ip < {high}"));
        }
        if !conditions.is_empty() {
            self.sql.push_str(" WHERE ");
            self.sql.push_str(&conditions.join(" AND "));
        }
    }

    /// `head`, then the filter's ` WHERE …`, then `tail`.
    fn filtered(head: &str, filter: &HistoryFilter, tail: &str) -> Self {
        let mut built = Built { sql: head.to_owned(), params: Vec::new() };
        built.push_where(filter);
        built.sql.push_str(tail);
        built
    }
}

/// Bans per country.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CountryCount {
    /// `None` or empty: unknown.
    pub country_code: Option<String>,
    pub country_name: Option<String>,
    pub bans: i64,
    pub distinct_ips: i64,
}

/// Bans per jail.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JailCount {
    pub jail: String,
    pub bans: i64,
    pub distinct_ips: i64,
}

/// The most banned addresses.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IpCount {
    pub ip: String,
    pub bans: i64,
    pub last_banned_at: i64,
    pub country_code: Option<String>,
}

/// What the archive knows about one address, over all its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSummary {
    pub bans: i64,
    pub unbans: i64,
    pub first_banned_at: Option<i64>,
    pub last_banned_at: Option<i64>,
    /// Every jail the address has events in, sorted.
    pub jails: Vec<String>,
    /// The country (and AS) of its latest event that has one.
    pub placed: Option<IpPlace>,
    /// Every host that banned it, sorted.
    pub hosts: Vec<String>,
}

/// A looked-up place of an address.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IpPlace {
    pub country_code: String,
    pub country_name: Option<String>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
}

/// A country lookup to store on archived rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoFill {
    pub id: i64,
    /// Empty: looked up, unknown.
    pub country_code: String,
    pub country_name: String,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
}

/// One batch of a host's outbox events to store: consecutive sequences
/// from `first`, one archived row each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch {
    pub host: String,
    /// The stream delivering them: stored only while it holds the host's
    /// stream lease.
    pub stream_id: String,
    /// The sequence of `rows[0]`; `rows[i]` has `first + i`.
    pub first: i64,
    /// The events as archive rows (`host` set to the host). An event that
    /// is not to be archived (already archived otherwise) is `None`: its
    /// sequence still counts.
    pub rows: Vec<Option<ArchivedBan>>,
    /// Unix seconds, for the cursor's `updated_at`.
    pub at: i64,
}

impl EventBatch {
    /// The last sequence of the batch (`first - 1` when empty).
    pub fn last(&self) -> i64 {
        self.first + i64::try_from(self.rows.len()).unwrap_or(i64::MAX / 2) - 1
    }
}

/// What storing an [`EventBatch`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsStored {
    /// Every event through `through` is stored (the cursor); `added` rows
    /// were new in the archive.
    Stored { through: i64, added: u64 },
    /// The batch starts after `cursor + 1`: nothing stored.
    Gap { cursor: i64 },
    /// The stream no longer holds the host's lease: nothing stored.
    NotHolder,
}

/// The archive's operations.
#[async_trait::async_trait]
pub trait HistoryStore: Send + Sync + std::fmt::Debug {
    /// One transaction; rows already archived are left alone. Returns how
    /// many were new.
    async fn archive(&self, rows: &[ArchivedBan]) -> Result<u64, StoreError>;
    /// Newest first (banned_at, then id, descending), after the keyset
    /// `after` = (banned_at, id) of the previous page's last row.
    async fn page(
        &self,
        filter: &HistoryFilter,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<ArchivedBan>, StoreError>;
    async fn by_country(&self, filter: &HistoryFilter) -> Result<Vec<CountryCount>, StoreError>;
    /// The earliest `banned_at` the filter selects (no arithmetic: BanTrend
    /// checks its bucket count with it before grouping).
    async fn earliest(&self, filter: &HistoryFilter) -> Result<Option<i64>, StoreError>;
    /// (bucket index from `origin`, count) of non-empty buckets of `bucket` seconds.
    async fn trend(&self, filter: &HistoryFilter, origin: i64, bucket: i64) -> Result<Vec<(i64, i64)>, StoreError>;
    async fn by_jail(&self, filter: &HistoryFilter) -> Result<Vec<JailCount>, StoreError>;
    async fn top_ips(&self, filter: &HistoryFilter, limit: u32) -> Result<Vec<IpCount>, StoreError>;
    /// Every event of `ip` (on `host`, or every host), oldest first.
    async fn ip_events(&self, ip: &str, host: Option<&str>) -> Result<Vec<ArchivedBan>, StoreError>;
    /// At most `limit` events of `ip` (on `host`, or every host), oldest
    /// first (banned_at, then id), after the keyset `after` = (banned_at,
    /// id) of the previous page's last row.
    async fn ip_events_page(
        &self,
        ip: &str,
        host: Option<&str>,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<ArchivedBan>, StoreError>;
    /// Totals, jails, hosts and place of `ip` (on `host`, or every host),
    /// computed in SQL (no event is loaded).
    async fn ip_summary(&self, ip: &str, host: Option<&str>) -> Result<IpSummary, StoreError>;
    /// Rows whose country was never looked up, oldest first: (id, ip).
    async fn missing_geo(&self, limit: u32) -> Result<Vec<(i64, String)>, StoreError>;
    /// One transaction.
    async fn fill_geo(&self, fills: &[GeoFill]) -> Result<(), StoreError>;
    /// `host`'s bans made through this service (manual or blocklist)
    /// between `from` and `to` (inclusive): (jail, ip, banned_at).
    async fn manual_bans(&self, host: &str, from: i64, to: i64) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// `host`'s archived bans of `jail` (any origin) banned between `from`
    /// and `to` (inclusive): (ip, banned_at, origin). A range of the (jail,
    /// banned_at) index.
    async fn jail_bans(
        &self,
        host: &str,
        jail: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64, Origin)>, StoreError>;
    /// Deletes events before `before`; returns how many.
    async fn purge_history(&self, before: i64) -> Result<u64, StoreError>;
    async fn cursor(&self, source: &str) -> Result<Option<i64>, StoreError>;
    async fn set_cursor(&self, source: &str, position: i64, at: i64) -> Result<(), StoreError>;
    /// Archives `rows` and sets the cursors `cursors` (source, position)
    /// in one transaction: the local sync's batch and its rowid cursor.
    /// Returns how many rows were new.
    async fn archive_with_cursors(
        &self,
        rows: &[ArchivedBan],
        cursors: &[(&str, i64)],
        at: i64,
    ) -> Result<u64, StoreError>;
    /// The last event sequence stored for `host` (0: none).
    async fn event_cursor(&self, host: &str) -> Result<i64, StoreError>;
    /// One transaction: checks `batch.stream_id` still holds the host's
    /// stream lease, locks the host's cursor, archives the events after it
    /// (the ones at or below it are skipped: stored before) and advances
    /// it to the batch's last sequence. A batch starting after cursor + 1
    /// stores nothing ([`EventsStored::Gap`]).
    async fn store_events(&self, batch: &EventBatch) -> Result<EventsStored, StoreError>;
}

/// The columns of an archived row, in [`ArchivedBan`]'s order.
const COLUMNS: &str = "id, host, jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures, matches, \
                       country_code, country_name, asn, as_org, archived_at, source";

/// Every event of $1 (on host $2, or every host when NULL), oldest first.
const IP_EVENTS: &str = "SELECT id, host, jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures, matches, \
                         country_code, country_name, asn, as_org, archived_at \
                         FROM ban_history WHERE ip = $1 AND ($2 IS NULL OR host = $2) ORDER BY banned_at, id";
/// The first $3 events of $1 (host $2), oldest first.
const IP_EVENTS_FIRST: &str = "SELECT id, host, jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures, \
                               matches, country_code, country_name, asn, as_org, archived_at \
                               FROM ban_history WHERE ip = $1 AND ($2 IS NULL OR host = $2) \
                               ORDER BY banned_at, id LIMIT $3";
/// The $5 events of $1 (host $2) after ($3 banned_at, $4 id), oldest
/// first. A row value: an index range on (ip, banned_at).
const IP_EVENTS_AFTER: &str = "SELECT id, host, jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures, \
                               matches, country_code, country_name, asn, as_org, archived_at \
                               FROM ban_history WHERE ip = $1 AND ($2 IS NULL OR host = $2) \
                               AND (banned_at, id) > ($3, $4) ORDER BY banned_at, id LIMIT $5";
/// (bans, events, first ban, last ban) of $1 (host $3); $2 is [`Event::Ban`].
const IP_TOTALS: &str = "SELECT COALESCE(SUM(CASE WHEN event = $2 THEN 1 ELSE 0 END), 0) AS bans, \
                         COUNT(*) AS events, \
                         MIN(CASE WHEN event = $2 THEN banned_at END) AS first_banned_at, \
                         MAX(CASE WHEN event = $2 THEN banned_at END) AS last_banned_at \
                         FROM ban_history WHERE ip = $1 AND ($3 IS NULL OR host = $3)";
const IP_JAILS: &str =
    "SELECT DISTINCT jail FROM ban_history WHERE ip = $1 AND ($2 IS NULL OR host = $2) ORDER BY jail";
/// The hosts that banned $1 (host $2); $3 is [`Event::Ban`].
const IP_HOSTS: &str = "SELECT DISTINCT host FROM ban_history WHERE ip = $1 AND ($2 IS NULL OR host = $2) \
                        AND event = $3 ORDER BY host";
/// The place of $1's latest event that has one (the empty code is
/// "looked up, unknown": see `crate::history::is_unknown_country`).
const IP_PLACE: &str = "SELECT country_code, country_name, asn, as_org FROM ban_history \
                        WHERE ip = $1 AND ($2 IS NULL OR host = $2) AND country_code IS NOT NULL AND country_code <> '' \
                        ORDER BY banned_at DESC, id DESC LIMIT 1";
const MISSING_GEO: &str = "SELECT id, ip FROM ban_history WHERE country_code IS NULL ORDER BY id LIMIT $1";
const FILL_GEO: &str =
    "UPDATE ban_history SET country_code = $1, country_name = $2, asn = $3, as_org = $4 WHERE id = $5";
/// Host $5's bans ($4 [`Event::Ban`]) not of origin $3
/// ([`Origin::Fail2ban`]: made through this service, by hand or by a
/// blocklist import) from $1 to $2.
const MANUAL_BANS: &str = "SELECT jail, ip, banned_at FROM ban_history \
                           WHERE banned_at >= $1 AND banned_at <= $2 AND origin <> $3 AND event = $4 AND host = $5";
/// Host $5's bans ($4 [`Event::Ban`]) of jail $1 from $2 to $3.
const JAIL_BANS: &str = "SELECT ip, banned_at, origin FROM ban_history \
                         WHERE jail = $1 AND banned_at >= $2 AND banned_at <= $3 AND event = $4 AND host = $5";

/// A row of [`JAIL_BANS`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct JailBanRow {
    ip: String,
    banned_at: i64,
    #[sqlx(try_from = "String")]
    origin: Origin,
}

impl From<JailBanRow> for (String, i64, Origin) {
    fn from(row: JailBanRow) -> Self {
        (row.ip, row.banned_at, row.origin)
    }
}
const PURGE: &str = "DELETE FROM ban_history WHERE banned_at < $1";
const SELECT_CURSOR: &str = "SELECT position FROM history_cursors WHERE source = $1";
const UPSERT_CURSOR: &str = "INSERT INTO history_cursors (source, position, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (source) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at";

/// Makes sure host $1 has a delivery cursor (0, at $2).
const INSERT_EVENT_CURSOR: &str = "INSERT INTO host_event_cursors (host, sequence, updated_at) VALUES ($1, 0, $2) \
                                   ON CONFLICT (host) DO NOTHING";
/// Host $1's cursor, locked until the transaction ends (an UPDATE takes
/// the row lock on PostgreSQL, the write lock on SQLite).
const LOCK_EVENT_CURSOR: &str = "UPDATE host_event_cursors SET updated_at = $2 WHERE host = $1 RETURNING sequence";
const SET_EVENT_CURSOR: &str = "UPDATE host_event_cursors SET sequence = $2, updated_at = $3 WHERE host = $1";
const SELECT_EVENT_CURSOR: &str = "SELECT sequence FROM host_event_cursors WHERE host = $1";
/// Whether stream $2 holds host $1's lease.
const HOLDS_STREAM: &str = "SELECT count(*) FROM hosts WHERE id = $1 AND stream_id = $2 AND revoked_at IS NULL";

/// Parameters an archived row binds.
const PARAMS_PER_ROW: usize = 16;

/// One multi-row insert of `rows`; rows already archived are skipped. Its
/// parameters are bound in the order they appear: `Dialect::placeholder`.
fn archive_insert<DB: Dialect>(rows: &[ArchivedBan]) -> Built {
    let mut built = Built { sql: String::new(), params: Vec::with_capacity(rows.len() * PARAMS_PER_ROW) };
    let mut values = Vec::with_capacity(rows.len());
    for r in rows {
        let text = |v: &Option<String>| v.clone().map_or(Param::Null, Param::Text);
        let cells: [Param; PARAMS_PER_ROW] = [
            Param::Text(r.host.clone()),
            Param::Text(r.jail.clone()),
            Param::Text(r.ip.clone()),
            Param::Int(r.banned_at),
            Param::Int(r.ban_seconds),
            Param::Int(i64::from(r.ban_count)),
            Param::Text(r.origin.as_str().to_owned()),
            Param::Text(r.event.as_str().to_owned()),
            Param::Int(i64::from(r.failures)),
            Param::Text(r.matches.clone()),
            text(&r.country_code),
            text(&r.country_name),
            r.asn.map_or(Param::NullInt, Param::Int),
            text(&r.as_org),
            Param::Int(r.archived_at),
            text(&r.source),
        ];
        let placeholders: Vec<String> = cells
            .into_iter()
            .map(|c| {
                built.params.push(c);
                DB::placeholder(built.params.len())
            })
            .collect();
        values.push(format!("({})", placeholders.join(", ")));
    }
    built.sql = format!(
        "INSERT INTO ban_history (host, jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures, \
         matches, country_code, country_name, asn, as_org, archived_at, source) VALUES {} \
         ON CONFLICT (host, jail, ip, banned_at, event) DO NOTHING",
        values.join(", ")
    );
    built
}

/// A page of `filter`'s rows, newest first, after the keyset `after`.
fn page_query(filter: &HistoryFilter, after: Option<(i64, i64)>, limit: u32) -> Built {
    let mut built = Built::filtered(&format!("SELECT {COLUMNS} FROM ban_history"), filter, "");
    if let Some((at, id)) = after {
        let joiner = if built.params.is_empty() { " WHERE" } else { " AND" };
        let (a, b) = (built.param(Param::Int(at)), built.param(Param::Int(id)));
        // A row value: an index range on (banned_at, id) on both backends
        // (the OR form made PostgreSQL walk the index from the top).
        built.sql.push_str(&format!("{joiner} (banned_at, id) < ({a}, {b})"));
    }
    let l = built.param(Param::Int(i64::from(limit)));
    built.sql.push_str(&format!(" ORDER BY banned_at DESC, id DESC LIMIT {l}"));
    built
}

fn by_country_query(filter: &HistoryFilter) -> Built {
    Built::filtered(
        "SELECT country_code, max(country_name) AS country_name, count(*) AS bans, count(DISTINCT ip) AS distinct_ips \
         FROM ban_history",
        filter,
        " GROUP BY country_code ORDER BY bans DESC, country_code",
    )
}

fn trend_query(filter: &HistoryFilter, origin: i64, bucket: i64) -> Built {
    let mut built = Built::default();
    let o = built.param(Param::Int(origin));
    let b = built.param(Param::Int(bucket));
    built.sql = format!("SELECT (banned_at - {o}) / {b} AS bucket, count(*) AS bans FROM ban_history");
    built.push_where(filter);
    built.sql.push_str(" GROUP BY bucket ORDER BY bucket");
    built
}

fn by_jail_query(filter: &HistoryFilter) -> Built {
    Built::filtered(
        "SELECT jail, count(*) AS bans, count(DISTINCT ip) AS distinct_ips FROM ban_history",
        filter,
        " GROUP BY jail ORDER BY bans DESC, jail",
    )
}

fn top_ips_query(filter: &HistoryFilter, limit: u32) -> Built {
    let mut built = Built::filtered(
        "SELECT ip, count(*) AS bans, max(banned_at) AS last_banned_at, max(country_code) AS country_code \
         FROM ban_history",
        filter,
        "",
    );
    let l = built.param(Param::Int(i64::from(limit)));
    built.sql.push_str(&format!(" GROUP BY ip ORDER BY bans DESC, ip LIMIT {l}"));
    built
}

fn earliest_query(filter: &HistoryFilter) -> Built {
    Built::filtered("SELECT MIN(banned_at) FROM ban_history", filter, "")
}

/// (bans, events, first ban, last ban) as [`IP_TOTALS`] returns them.
type IpTotals = (i64, i64, Option<i64>, Option<i64>);

fn summary(totals: IpTotals, jails: Vec<String>, hosts: Vec<String>, placed: Option<IpPlace>) -> IpSummary {
    let (bans, events, first_banned_at, last_banned_at) = totals;
    IpSummary { bans, unbans: events - bans, first_banned_at, last_banned_at, jails, placed, hosts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_number_their_parameters_after_the_ones_before() {
        let filter = HistoryFilter {
            from: Some(10),
            jail: Some("sshd".into()),
            ip_prefix: Some("192.0.2.".into()),
            ..Default::default()
        };
        let built = trend_query(&filter, 5, 60);
        assert_eq!(
            built.sql,
            "SELECT (banned_at - $1) / $2 AS bucket, count(*) AS bans FROM ban_history \
             WHERE banned_at >= $3 AND jail = $4 AND ip >= $5 AND ip < $6 GROUP BY bucket ORDER BY bucket"
        );
        assert_eq!(built.params.len(), 6);
        let page = page_query(&HistoryFilter::default(), Some((7, 8)), 3);
        assert!(page.sql.ends_with(" WHERE (banned_at, id) < ($1, $2) ORDER BY banned_at DESC, id DESC LIMIT $3"));
    }
}
