//! Prometheus metrics: every name in one place.
//!
//! The registry is owned by the application (no global state), so tests can
//! run several services in one process.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{mmdb::DatabaseSet, resolve::Outcome};

/// `geo_lookups_total{status}`: lookups answered, by outcome.
pub const LOOKUPS_TOTAL: &str = "geo_lookups";
/// `geo_lookup_batch_size`: items per LookupBatch request.
pub const BATCH_SIZE: &str = "geo_lookup_batch_size";
/// `geo_database_build_timestamp_seconds{database,type}`: build time of each loaded database.
pub const DATABASE_BUILD_TIMESTAMP: &str = "geo_database_build_timestamp_seconds";
/// `geo_databases_loaded`: databases in the active set.
pub const DATABASES_LOADED: &str = "geo_databases_loaded";
/// `geo_cache_entries{kind}`: in-memory answers and negatives, and writes pending the next flush.
pub const CACHE_ENTRIES: &str = "geo_cache_entries";
/// `geo_cache_lookups_total{result}`: addresses the databases missed, by what the cache said (hit, negative_hit, miss).
pub const CACHE_LOOKUPS: &str = "geo_cache_lookups";
/// `geo_fallback_requests_total{result}`: requests to the online fallback (ok, failed).
pub const FALLBACK_REQUESTS: &str = "geo_fallback_requests";
/// `geo_fallback_breaker_open_until_seconds`: Unix time the fallback's circuit breaker closes
/// again (in the past, or 0, while it is closed).
pub const FALLBACK_BREAKER_OPEN_UNTIL: &str = "geo_fallback_breaker_open_until_seconds";
/// `geo_database_build_age_seconds{database,type}`: how old each loaded build is.
pub const DATABASE_BUILD_AGE: &str = "geo_database_build_age_seconds";
/// `geo_database_reloads_total{result}`: reloads applied (`ok`) and refused (`failed`).
pub const DATABASE_RELOADS: &str = "geo_database_reloads";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum StatusLabel {
    found,
    not_found,
    reserved,
    invalid,
    upstream_error,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LookupLabels {
    status: StatusLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DatabaseLabels {
    database: String,
    r#type: String,
}

impl From<Outcome> for StatusLabel {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Found => StatusLabel::found,
            Outcome::NotFound => StatusLabel::not_found,
            Outcome::Reserved => StatusLabel::reserved,
            Outcome::Invalid => StatusLabel::invalid,
            Outcome::UpstreamError => StatusLabel::upstream_error,
        }
    }
}

/// Lookup outcomes of one request, counted locally and added to the
/// metrics once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally([u64; Outcome::ALL.len()]);

impl Tally {
    pub fn add(&mut self, outcome: Outcome) {
        self.0[outcome as usize] += 1;
    }

    /// Takes back one `outcome` (a later step changed the answer).
    pub fn remove(&mut self, outcome: Outcome) {
        self.0[outcome as usize] = self.0[outcome as usize].saturating_sub(1);
    }
}

/// The service's metrics and the registry that exposes them.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    /// One counter per outcome, created up front so counting is one atomic
    /// add with no label lookup.
    lookups: [Counter; Outcome::ALL.len()],
    batch_size: Histogram,
    database_build: Family<DatabaseLabels, Gauge>,
    database_age: Family<DatabaseLabels, Gauge>,
    /// The loaded databases and their build times, for the age gauge.
    database_labels: std::sync::Mutex<Vec<(DatabaseLabels, i64)>>,
    databases_loaded: Gauge,
    reloads: Family<ResultLabels, Counter>,
    cache_entries: Family<KindLabels, Gauge>,
    cache_lookups: Family<ResultLabels, Counter>,
    fallback_requests: Family<ResultLabels, Counter>,
    breaker_open_until: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let family = Family::<LookupLabels, Counter>::default();
        registry.register(LOOKUPS_TOTAL, "Lookups answered, by status", family.clone());
        let lookups =
            Outcome::ALL.map(|outcome| family.get_or_create(&LookupLabels { status: outcome.into() }).clone());
        let batch_size = Histogram::new([1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0]);
        registry.register(BATCH_SIZE, "Items per LookupBatch request", batch_size.clone());
        let database_build = Family::<DatabaseLabels, Gauge>::default();
        registry.register(
            DATABASE_BUILD_TIMESTAMP,
            "Build time of each loaded database, Unix seconds",
            database_build.clone(),
        );
        let database_age = Family::<DatabaseLabels, Gauge>::default();
        registry.register(DATABASE_BUILD_AGE, "Age of each loaded database build, seconds", database_age.clone());
        let databases_loaded = Gauge::default();
        registry.register(DATABASES_LOADED, "Databases in the active set", databases_loaded.clone());
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(DATABASE_RELOADS, "Database reloads, by result", reloads.clone());
        let cache_entries = Family::<KindLabels, Gauge>::default();
        registry.register(CACHE_ENTRIES, "In-memory cache entries and pending writes", cache_entries.clone());
        let cache_lookups = Family::<ResultLabels, Counter>::default();
        registry.register(CACHE_LOOKUPS, "Cache lookups for addresses the databases missed", cache_lookups.clone());
        let fallback_requests = Family::<ResultLabels, Counter>::default();
        registry.register(FALLBACK_REQUESTS, "Requests to the online fallback, by result", fallback_requests.clone());
        let breaker_open_until = Gauge::default();
        registry.register(
            FALLBACK_BREAKER_OPEN_UNTIL,
            "Unix time the fallback's circuit breaker closes again (past or 0: closed)",
            breaker_open_until.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                lookups,
                batch_size,
                database_build,
                database_age,
                database_labels: std::sync::Mutex::default(),
                databases_loaded,
                reloads,
                cache_entries,
                cache_lookups,
                fallback_requests,
                breaker_open_until,
            }),
        }
    }

    /// Adds the lookups of one request.
    pub fn count_lookups(&self, tally: &Tally) {
        for (counter, &n) in self.inner.lookups.iter().zip(&tally.0) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }

    /// Lookups answered so far with `outcome`.
    pub fn lookups(&self, outcome: Outcome) -> u64 {
        self.inner.lookups[outcome as usize].get()
    }

    pub fn observe_batch(&self, items: usize) {
        self.inner.batch_size.observe(items as f64);
    }

    /// Publishes what is loaded now.
    pub fn set_databases(&self, set: &DatabaseSet) {
        self.inner.database_build.clear();
        let mut labels = self.inner.database_labels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        labels.clear();
        for db in set.databases() {
            let seconds = db
                .build_time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let db_labels = DatabaseLabels { database: db.name.to_string(), r#type: db.database_type.clone() };
            self.inner.database_build.get_or_create(&db_labels).set(seconds);
            labels.push((db_labels, seconds));
        }
        self.inner.databases_loaded.set(i64::try_from(set.databases().len()).unwrap_or(i64::MAX));
    }

    /// Counts cache outcomes for addresses the databases missed.
    pub fn count_cache_lookups(&self, hits: u64, negative_hits: u64, misses: u64) {
        for (result, n) in [("hit", hits), ("negative_hit", negative_hits), ("miss", misses)] {
            if n > 0 {
                self.inner.cache_lookups.get_or_create(&ResultLabels { result }).inc_by(n);
            }
        }
    }

    /// Cache outcomes so far: (hits, negative hits, misses).
    pub fn cache_lookups(&self) -> (u64, u64, u64) {
        let get = |result| self.inner.cache_lookups.get_or_create(&ResultLabels { result }).get();
        (get("hit"), get("negative_hit"), get("miss"))
    }

    /// Publishes the in-memory cache sizes.
    pub fn set_cache_sizes(&self, answers: u64, negatives: u64, pending: u64) {
        for (kind, n) in [("answers", answers), ("negatives", negatives), ("pending_writes", pending)] {
            self.inner.cache_entries.get_or_create(&KindLabels { kind }).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Counts a request to the fallback.
    pub fn count_fallback_request(&self, ok: bool) {
        self.inner.fallback_requests.get_or_create(&ResultLabels { result: if ok { "ok" } else { "failed" } }).inc();
    }

    /// Publishes how much longer the fallback's breaker stays open (zero:
    /// closed), as the Unix time it closes.
    pub fn set_breaker_open_for(&self, open_for: std::time::Duration) {
        let until = if open_for.is_zero() {
            0
        } else {
            let secs = i64::try_from(open_for.as_secs()).unwrap_or(i64::MAX);
            // Rounded up: an open breaker never shows as already closed.
            crate::clock::unix_now().saturating_add(secs).saturating_add(1)
        };
        self.inner.breaker_open_until.set(until);
    }

    /// Counts a reload attempt.
    pub fn count_reload(&self, ok: bool) {
        self.inner.reloads.get_or_create(&ResultLabels { result: if ok { "ok" } else { "failed" } }).inc();
    }

    /// The Prometheus text exposition of every metric. Build ages are
    /// computed now, from the build timestamps.
    pub fn render(&self) -> String {
        let now = crate::clock::unix_now();
        self.inner.database_age.clear();
        let builds = self.inner.database_labels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (labels, built) in builds.iter() {
            self.inner.database_age.get_or_create(labels).set(now.saturating_sub(*built));
        }
        drop(builds);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}
