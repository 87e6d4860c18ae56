//! Answers the local databases could not give, remembered.
//!
//! Two bounded in-memory caches sit in front of the persistent store: one
//! for answers (from the fallback), one for negatives (nobody could place
//! the address; they expire after the negative TTL). Lookups only read:
//! new rows and `last_seen` refreshes are collected in memory and written
//! in one transaction per flush (periodically and at shutdown), so a lookup
//! never waits on a SQL write. A store that is down degrades to misses and
//! the pending writes wait, bounded, for the next flush.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustc_hash::FxBuildHasher;
use tokio::time::Instant;

use crate::{
    metrics::Metrics,
    store::{CacheStore, CachedAnswer, StoreError, StoreStats},
};

/// What the cache knows of an address the local databases missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheHit {
    /// An earlier fallback answer.
    Answer(Arc<CachedAnswer>),
    /// Nobody could place it.
    Negative,
}

/// Sizes of the in-memory caches and how long negatives stay there.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub answers: usize,
    pub negatives: usize,
    pub negative_ttl: Duration,
    /// Most rows plus `last_seen` updates held for the next flush.
    pub max_pending: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self { answers: 100_000, negatives: 100_000, negative_ttl: Duration::from_secs(300), max_pending: 200_000 }
    }
}

#[derive(Debug, Default)]
struct Pending {
    rows: HashMap<String, CachedAnswer, FxBuildHasher>,
    seen: HashMap<String, i64, FxBuildHasher>,
}

impl Pending {
    fn len(&self) -> usize {
        self.rows.len() + self.seen.len()
    }
}

/// A snapshot for `GetInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSnapshot {
    pub store: StoreStats,
    pub memory_answers: u64,
    pub memory_negatives: u64,
    pub hits: u64,
    pub negative_hits: u64,
    pub misses: u64,
    pub pending_writes: u64,
    pub backend: &'static str,
}

/// The answer cache: memory in front of the persistent store.
#[derive(Debug)]
pub struct AnswerCache {
    store: Arc<dyn CacheStore>,
    answers: quick_cache::sync::Cache<String, Arc<CachedAnswer>>,
    negatives: quick_cache::sync::Cache<String, Instant>,
    limits: CacheLimits,
    pending: Mutex<Pending>,
    /// Writes dropped because the pending set was full.
    dropped_writes: AtomicU64,
    metrics: Metrics,
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl AnswerCache {
    pub fn new(store: Arc<dyn CacheStore>, limits: CacheLimits, metrics: Metrics) -> Self {
        Self {
            store,
            answers: quick_cache::sync::Cache::new(limits.answers.max(1)),
            negatives: quick_cache::sync::Cache::new(limits.negatives.max(1)),
            limits,
            pending: Mutex::new(Pending::default()),
            dropped_writes: AtomicU64::new(0),
            metrics,
        }
    }

    /// What the cache knows of each of `ips` (normalized addresses the
    /// databases missed), in order. Reads memory, then the store for the
    /// rest; every hit refreshes `last_seen` at the next flush.
    pub async fn lookup(&self, ips: &[String]) -> Vec<Option<CacheHit>> {
        let now = Instant::now();
        let mut out: Vec<Option<CacheHit>> = ips.iter().map(|ip| self.in_memory(ip, now)).collect();
        let unknown: Vec<String> =
            ips.iter().zip(&out).filter(|(_, hit)| hit.is_none()).map(|(ip, _)| ip.clone()).collect();
        if !unknown.is_empty() {
            match self.store.get(&unknown).await {
                Ok(rows) => {
                    let rows: HashMap<String, Arc<CachedAnswer>> =
                        rows.into_iter().map(|row| (row.ip.clone(), Arc::new(row))).collect();
                    for (ip, slot) in ips.iter().zip(out.iter_mut()) {
                        if slot.is_some() {
                            continue;
                        }
                        if let Some(row) = rows.get(ip) {
                            *slot = Some(self.remember(row.clone(), now));
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "persistent cache unavailable; answering without it"),
            }
        }
        let mut seen = Vec::new();
        let (mut hits, mut negative_hits, mut misses) = (0, 0, 0);
        for (ip, hit) in ips.iter().zip(&out) {
            match hit {
                Some(CacheHit::Answer(_)) => hits += 1,
                Some(CacheHit::Negative) => negative_hits += 1,
                None => misses += 1,
            }
            if hit.is_some() {
                seen.push(ip.as_str());
            }
        }
        self.metrics.count_cache_lookups(hits, negative_hits, misses);
        self.touch(seen);
        self.publish_sizes();
        out
    }

    fn in_memory(&self, ip: &str, now: Instant) -> Option<CacheHit> {
        // Negatives first: they are the common case. An address is never in
        // both caches (`remember` keeps them apart).
        match self.negatives.get(ip) {
            Some(expires) if expires > now => return Some(CacheHit::Negative),
            Some(_) => {
                self.negatives.remove(ip);
            }
            None => {}
        }
        self.answers.get(ip).map(CacheHit::Answer)
    }

    fn remember(&self, row: Arc<CachedAnswer>, now: Instant) -> CacheHit {
        if row.is_negative() {
            self.answers.remove(row.ip.as_str());
            self.negatives.insert(row.ip.clone(), now + self.limits.negative_ttl);
            CacheHit::Negative
        } else {
            self.negatives.remove(row.ip.as_str());
            self.answers.insert(row.ip.clone(), row.clone());
            CacheHit::Answer(row)
        }
    }

    fn publish_sizes(&self) {
        let pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        self.metrics.set_cache_sizes(self.answers.len() as u64, self.negatives.len() as u64, pending as u64);
    }

    fn touch(&self, ips: Vec<&str>) {
        if ips.is_empty() {
            return;
        }
        let at = unix_now();
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for ip in ips {
            // An address seen again before the flush costs no allocation.
            if let Some(last) = pending.seen.get_mut(ip) {
                *last = at;
            } else if pending.len() < self.limits.max_pending {
                pending.seen.insert(ip.to_owned(), at);
            } else {
                self.dropped_writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Remembers answers (fallback answers or negatives): in memory now, in
    /// the store at the next flush.
    pub fn record(&self, answers: Vec<CachedAnswer>) {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for answer in answers {
            let answer = Arc::new(answer);
            self.remember(answer.clone(), now);
            if pending.len() >= self.limits.max_pending && !pending.rows.contains_key(&answer.ip) {
                self.dropped_writes.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            pending.rows.insert(answer.ip.clone(), Arc::unwrap_or_clone(answer));
        }
        drop(pending);
        self.publish_sizes();
    }

    /// Forgets `ips` in memory (a newer database places them) and deletes
    /// their rows.
    pub async fn forget(&self, ips: &[String]) -> Result<u64, StoreError> {
        {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for ip in ips {
                self.answers.remove(ip.as_str());
                self.negatives.remove(ip.as_str());
                pending.rows.remove(ip);
                pending.seen.remove(ip);
            }
        }
        self.store.delete(ips).await
    }

    /// Writes pending rows and `last_seen` refreshes in one transaction. On failure they are kept (bounded) for the next flush.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if batch.len() == 0 {
            return Ok(0);
        }
        let rows: Vec<CachedAnswer> = batch.rows.values().cloned().collect();
        let seen: Vec<(String, i64)> = batch.seen.iter().map(|(ip, at)| (ip.clone(), *at)).collect();
        let written = batch.len();
        let written_now = self.store.write(&rows, &seen).await;
        self.publish_sizes();
        match written_now {
            Ok(_) => Ok(written),
            Err(error) => {
                // Put the batch back under whatever arrived meanwhile; newer
                // values win.
                let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (ip, row) in batch.rows {
                    if pending.len() < self.limits.max_pending {
                        pending.rows.entry(ip).or_insert(row);
                    }
                }
                for (ip, at) in batch.seen {
                    if pending.len() < self.limits.max_pending {
                        pending.seen.entry(ip).or_insert(at);
                    }
                }
                Err(error)
            }
        }
    }

    /// Deletes rows not seen within `older_than` and empties the memory
    /// caches (they may hold purged rows). Pending writes are flushed first
    /// so a recent `last_seen` is not lost.
    pub async fn purge(&self, older_than: Duration) -> Result<u64, StoreError> {
        self.flush().await?;
        let cutoff = unix_now().saturating_sub(i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX));
        let deleted = self.store.purge_older_than(cutoff).await?;
        self.answers.clear();
        self.negatives.clear();
        Ok(deleted)
    }

    /// Up to `limit` negatives, the longest-unresolved first.
    pub async fn negatives(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        self.flush().await?;
        self.store.negatives(limit).await
    }

    /// Counts for `GetInfo`; the store's row counts are zero while it is
    /// unreachable.
    pub async fn snapshot(&self) -> CacheSnapshot {
        let (hits, negative_hits, misses) = self.metrics.cache_lookups();
        let store = self.store.stats().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "persistent cache unavailable for stats");
            StoreStats::default()
        });
        let pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        CacheSnapshot {
            store,
            memory_answers: self.answers.len() as u64,
            memory_negatives: self.negatives.len() as u64,
            hits,
            negative_hits,
            misses,
            pending_writes: pending as u64,
            backend: self.store.backend(),
        }
    }

    /// Closes the store (after a last flush by the caller).
    pub async fn close(&self) {
        self.store.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    async fn cache(limits: CacheLimits) -> (tempfile::TempDir, AnswerCache) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("geo.db").display());
        let store = Arc::new(SqliteStore::connect(&url).await.unwrap());
        (dir, AnswerCache::new(store, limits, Metrics::new()))
    }

    fn ips(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn negatives_are_remembered_and_written_only_at_flush() {
        let (_dir, cache) = cache(CacheLimits::default()).await;
        let now = unix_now();
        assert_eq!(cache.lookup(&ips(&["203.0.113.5"])).await, vec![None]);
        cache.record(vec![CachedAnswer::negative("203.0.113.5".into(), now)]);
        assert_eq!(cache.lookup(&ips(&["203.0.113.5"])).await, vec![Some(CacheHit::Negative)]);
        assert_eq!(cache.store.stats().await.unwrap().rows, 0, "nothing written before the flush");
        assert!(cache.flush().await.unwrap() > 0);
        let stats = cache.store.stats().await.unwrap();
        assert_eq!((stats.rows, stats.negatives), (1, 1));
    }

    #[tokio::test]
    async fn negatives_expire_from_memory_but_the_store_still_knows_them() {
        let limits = CacheLimits { negative_ttl: Duration::from_millis(1), ..CacheLimits::default() };
        let (_dir, cache) = cache(limits).await;
        cache.record(vec![CachedAnswer::negative("198.51.100.9".into(), unix_now())]);
        cache.flush().await.unwrap();
        // Past the TTL (a sleep longer than it can only make expiry surer).
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cache.negatives.len(), 1);
        // Expired in memory: read back from the store, cached again.
        assert_eq!(cache.lookup(&ips(&["198.51.100.9"])).await, vec![Some(CacheHit::Negative)]);
        let snapshot = cache.snapshot().await;
        assert_eq!((snapshot.negative_hits, snapshot.misses), (1, 0));
    }

    #[tokio::test]
    async fn last_seen_refreshes_are_batched_into_the_flush() {
        let (_dir, cache) = cache(CacheLimits::default()).await;
        cache.store.put(&[CachedAnswer::negative("192.0.2.77".into(), 10)]).await.unwrap();
        for _ in 0..5 {
            cache.lookup(&ips(&["192.0.2.77"])).await;
        }
        assert_eq!(cache.store.get(&ips(&["192.0.2.77"])).await.unwrap()[0].last_seen, 10);
        assert_eq!(cache.flush().await.unwrap(), 1, "five hits, one pending update");
        assert!(cache.store.get(&ips(&["192.0.2.77"])).await.unwrap()[0].last_seen >= unix_now() - 5);
    }

    #[tokio::test]
    async fn an_answer_replaces_a_negative_in_memory_and_back() {
        let (_dir, cache) = cache(CacheLimits::default()).await;
        cache.record(vec![CachedAnswer::negative("192.0.2.60".into(), 1)]);
        let placed = CachedAnswer {
            country_code: Some("SE".into()),
            source: crate::store::AnswerSource::Http,
            ..CachedAnswer::negative("192.0.2.60".into(), 2)
        };
        cache.record(vec![placed.clone()]);
        assert_eq!(cache.lookup(&ips(&["192.0.2.60"])).await, vec![Some(CacheHit::Answer(Arc::new(placed)))]);
        cache.record(vec![CachedAnswer::negative("192.0.2.60".into(), 3)]);
        assert_eq!(cache.lookup(&ips(&["192.0.2.60"])).await, vec![Some(CacheHit::Negative)]);
    }

    #[tokio::test]
    async fn pending_writes_are_bounded() {
        let limits = CacheLimits { max_pending: 3, ..CacheLimits::default() };
        let (_dir, cache) = cache(limits).await;
        let rows = (0..10).map(|i| CachedAnswer::negative(format!("192.0.2.{i}"), 1)).collect();
        cache.record(rows);
        assert_eq!(cache.snapshot().await.pending_writes, 3);
        assert_eq!(cache.dropped_writes.load(Ordering::Relaxed), 7);
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_the_batch_for_the_next_one() {
        let (_dir, cache) = cache(CacheLimits::default()).await;
        cache.record(vec![CachedAnswer::negative("192.0.2.50".into(), 1)]);
        cache.store.close().await;
        assert!(cache.flush().await.is_err());
        assert_eq!(cache.snapshot_pending(), 1);
    }

    impl AnswerCache {
        fn snapshot_pending(&self) -> usize {
            self.pending.lock().unwrap().len()
        }
    }
}
