//! The fallback's answers, remembered.
//!
//! Bounded in-memory caches sit in front of the persistent store: one for
//! places, one for negatives (the fallback was asked and could not place
//! the address; they leave memory after the negative TTL), and a short memo
//! of addresses the store has no row for, so a database miss asked about
//! again does not cost a SQL read each time. That memo is not a negative: an
//! address in it is still sent to the fallback when a request allows it.
//! Lookups only read: new rows and `last_seen` refreshes are collected in
//! memory and written in one transaction per flush (periodically and at
//! shutdown), so a lookup never waits on a SQL write. A store that is down
//! degrades to misses and the pending writes wait, bounded, for the next
//! flush.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rustc_hash::FxBuildHasher;
use tokio::time::Instant;

use crate::{
    clock::unix_now,
    metrics::Metrics,
    store::{CacheStore, CachedAnswer, StoreError, StoreStats},
};

/// What the cache knows of an address the local databases missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheHit {
    /// The fallback placed it.
    Answer(Arc<CachedAnswer>),
    /// The fallback could not place it.
    Negative,
}

/// Sizes of the in-memory caches and how long entries stay there.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub answers: usize,
    pub negatives: usize,
    pub negative_ttl: Duration,
    /// How long "the store has no row for this address" is believed without
    /// reading the store again (another replica may have written one).
    pub absent_ttl: Duration,
    /// Most rows plus `last_seen` updates held for the next flush.
    pub max_pending: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            answers: 100_000,
            negatives: 100_000,
            negative_ttl: Duration::from_secs(300),
            absent_ttl: Duration::from_secs(60),
            max_pending: 200_000,
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    rows: HashMap<IpAddr, CachedAnswer, FxBuildHasher>,
    seen: HashMap<IpAddr, i64, FxBuildHasher>,
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
    answers: quick_cache::sync::Cache<IpAddr, Arc<CachedAnswer>>,
    negatives: quick_cache::sync::Cache<IpAddr, Instant>,
    /// Addresses the store had no row for, until when that is believed.
    absent: quick_cache::sync::Cache<IpAddr, Instant>,
    limits: CacheLimits,
    pending: Mutex<Pending>,
    /// Writes dropped because the pending set was full.
    dropped_writes: AtomicU64,
    metrics: Metrics,
}

impl AnswerCache {
    pub fn new(store: Arc<dyn CacheStore>, limits: CacheLimits, metrics: Metrics) -> Self {
        Self {
            store,
            answers: quick_cache::sync::Cache::new(limits.answers.max(1)),
            negatives: quick_cache::sync::Cache::new(limits.negatives.max(1)),
            absent: quick_cache::sync::Cache::new(limits.negatives.max(1)),
            limits,
            pending: Mutex::new(Pending::default()),
            dropped_writes: AtomicU64::new(0),
            metrics,
        }
    }

    /// What the cache knows of each of `ips` (addresses the databases
    /// missed), in order; `None` when nothing is known. Reads memory, then
    /// the store for the rest; every hit refreshes `last_seen` at the next
    /// flush.
    pub async fn lookup(&self, ips: &[IpAddr]) -> Vec<Option<CacheHit>> {
        let now = Instant::now();
        let mut out: Vec<Option<CacheHit>> = Vec::with_capacity(ips.len());
        // The addresses to read from the store, and where they stand in `ips`.
        let (mut unread, mut texts) = (Vec::new(), Vec::new());
        for (i, ip) in ips.iter().enumerate() {
            let hit = self.in_memory(ip, now);
            if hit.is_none() && !self.known_absent(ip, now) {
                unread.push(i);
                texts.push(ip.to_string());
            }
            out.push(hit);
        }
        if !unread.is_empty() {
            match self.store.get(&texts).await {
                Ok(rows) => {
                    let mut rows: HashMap<String, CachedAnswer> =
                        rows.into_iter().map(|row| (row.ip.clone(), row)).collect();
                    for (i, text) in unread.into_iter().zip(texts) {
                        match rows.remove(&text) {
                            Some(row) => out[i] = Some(self.remember(ips[i], Arc::new(row), now)),
                            None => {
                                self.absent.insert(ips[i], now + self.limits.absent_ttl);
                            }
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
                seen.push(*ip);
            }
        }
        self.metrics.count_cache_lookups(hits, negative_hits, misses);
        self.touch(seen);
        self.publish_sizes();
        out
    }

    fn in_memory(&self, ip: &IpAddr, now: Instant) -> Option<CacheHit> {
        match self.negatives.get(ip) {
            Some(expires) if expires > now => return Some(CacheHit::Negative),
            Some(_) => {
                self.negatives.remove(ip);
            }
            None => {}
        }
        self.answers.get(ip).map(CacheHit::Answer)
    }

    fn known_absent(&self, ip: &IpAddr, now: Instant) -> bool {
        match self.absent.get(ip) {
            Some(until) if until > now => true,
            Some(_) => {
                self.absent.remove(ip);
                false
            }
            None => false,
        }
    }

    /// Keeps `row` in memory; an address is in at most one of the caches.
    fn remember(&self, ip: IpAddr, row: Arc<CachedAnswer>, now: Instant) -> CacheHit {
        self.absent.remove(&ip);
        if row.is_negative() {
            self.answers.remove(&ip);
            self.negatives.insert(ip, now + self.limits.negative_ttl);
            CacheHit::Negative
        } else {
            self.negatives.remove(&ip);
            self.answers.insert(ip, row.clone());
            CacheHit::Answer(row)
        }
    }

    fn publish_sizes(&self) {
        let pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        self.metrics.set_cache_sizes(self.answers.len() as u64, self.negatives.len() as u64, pending as u64);
    }

    fn touch(&self, ips: Vec<IpAddr>) {
        if ips.is_empty() {
            return;
        }
        let at = unix_now();
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for ip in ips {
            if let Some(last) = pending.seen.get_mut(&ip) {
                *last = at;
            } else if pending.len() < self.limits.max_pending {
                pending.seen.insert(ip, at);
            } else {
                self.dropped_writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Remembers what the fallback said (places and negatives): in memory
    /// now, in the store at the next flush.
    pub fn record(&self, answers: Vec<(IpAddr, CachedAnswer)>) {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (ip, answer) in answers {
            let answer = Arc::new(answer);
            self.remember(ip, answer.clone(), now);
            if pending.len() >= self.limits.max_pending && !pending.rows.contains_key(&ip) {
                self.dropped_writes.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            pending.rows.insert(ip, Arc::unwrap_or_clone(answer));
        }
        drop(pending);
        self.publish_sizes();
    }

    /// Forgets `ips` in memory (a newer database places them) and deletes
    /// their rows.
    pub async fn forget(&self, ips: &[IpAddr]) -> Result<u64, StoreError> {
        {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for ip in ips {
                self.answers.remove(ip);
                self.negatives.remove(ip);
                pending.rows.remove(ip);
                pending.seen.remove(ip);
            }
        }
        let texts: Vec<String> = ips.iter().map(ToString::to_string).collect();
        self.store.delete(&texts).await
    }

    /// Writes pending rows and `last_seen` refreshes in one transaction. On
    /// failure they are kept (bounded) for the next flush.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if batch.len() == 0 {
            return Ok(0);
        }
        let rows: Vec<CachedAnswer> = batch.rows.values().cloned().collect();
        let seen: Vec<(String, i64)> = batch.seen.iter().map(|(ip, at)| (ip.to_string(), *at)).collect();
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

    /// Up to `limit` negatives, the longest-unresolved first. A row whose
    /// address does not parse (written by hand?) is skipped with a warning.
    pub async fn negatives(&self, limit: u32) -> Result<Vec<IpAddr>, StoreError> {
        self.flush().await?;
        let rows = self.store.negatives(limit).await?;
        Ok(rows
            .into_iter()
            .filter_map(|text| match text.parse::<IpAddr>() {
                Ok(ip) => Some(ip.to_canonical()),
                Err(_) => {
                    tracing::warn!(ip = %text, "a negative row holds no IP address; skipped");
                    None
                }
            })
            .collect())
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

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn texts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn negative(ip: &str, now: i64) -> (IpAddr, CachedAnswer) {
        (ip.parse().unwrap(), CachedAnswer::negative(ip.into(), now))
    }

    #[tokio::test]
    async fn negatives_are_remembered_and_written_only_at_flush() {
        let (_dir, cache) = cache(CacheLimits::default()).await;
        let now = unix_now();
        assert_eq!(cache.lookup(&ips(&["203.0.113.5"])).await, vec![None]);
        cache.record(vec![negative("203.0.113.5", now)]);
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
        cache.record(vec![negative("198.51.100.9", unix_now())]);
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
        assert_eq!(cache.store.get(&texts(&["192.0.2.77"])).await.unwrap()[0].last_seen, 10);
        assert_eq!(cache.flush().await.unwrap(), 1, "five hits, one pending update");
        assert!(cache.store.get(&texts(&["192.0.2.77"])).await.unwrap()[0].last_seen >= unix_now() - 5);
    }

    #[tokio::test]
    async fn an_answer_replaces_a_negative_in_memory_and_back() {
        let (_dir, cache) = cache(CacheLimits::default()).await;
        cache.record(vec![negative("192.0.2.60", 1)]);
        let place = crate::resolve::Placed { country_code: "SE".into(), ..Default::default() };
        let placed = CachedAnswer::placed("192.0.2.60".into(), place, 2);
        cache.record(vec![("192.0.2.60".parse().unwrap(), placed.clone())]);
        assert_eq!(cache.lookup(&ips(&["192.0.2.60"])).await, vec![Some(CacheHit::Answer(Arc::new(placed)))]);
        cache.record(vec![negative("192.0.2.60", 3)]);
        assert_eq!(cache.lookup(&ips(&["192.0.2.60"])).await, vec![Some(CacheHit::Negative)]);
    }

    #[tokio::test]
    async fn pending_writes_are_bounded() {
        let limits = CacheLimits { max_pending: 3, ..CacheLimits::default() };
        let (_dir, cache) = cache(limits).await;
        let rows = (0..10).map(|i| negative(&format!("192.0.2.{i}"), 1)).collect();
        cache.record(rows);
        assert_eq!(cache.snapshot().await.pending_writes, 3);
        assert_eq!(cache.dropped_writes.load(Ordering::Relaxed), 7);
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_the_batch_for_the_next_one() {
        let (_dir, cache) = cache(CacheLimits::default()).await;
        cache.record(vec![negative("192.0.2.50", 1)]);
        cache.store.close().await;
        assert!(cache.flush().await.is_err());
        assert_eq!(cache.snapshot_pending(), 1);
    }

    #[tokio::test]
    async fn a_store_miss_is_remembered_briefly_and_is_not_a_negative() {
        let (_dir, cache) = cache(CacheLimits::default()).await;
        assert_eq!(cache.lookup(&ips(&["192.0.2.70"])).await, vec![None]);
        // A row written behind the memo's back (another replica) is not read
        // again while the memo holds; nothing was recorded either.
        cache.store.put(&[CachedAnswer::negative("192.0.2.70".into(), 5)]).await.unwrap();
        assert_eq!(cache.lookup(&ips(&["192.0.2.70"])).await, vec![None]);
        assert_eq!(cache.snapshot_pending(), 0, "a miss writes nothing");
        // What this replica records replaces the memo at once.
        cache.record(vec![negative("192.0.2.70", 6)]);
        assert_eq!(cache.lookup(&ips(&["192.0.2.70"])).await, vec![Some(CacheHit::Negative)]);
    }

    #[tokio::test]
    async fn the_memo_expires_and_the_store_is_read_again() {
        let limits = CacheLimits { absent_ttl: Duration::from_millis(1), ..CacheLimits::default() };
        let (_dir, cache) = cache(limits).await;
        assert_eq!(cache.lookup(&ips(&["192.0.2.71"])).await, vec![None]);
        cache.store.put(&[CachedAnswer::negative("192.0.2.71".into(), 5)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cache.lookup(&ips(&["192.0.2.71"])).await, vec![Some(CacheHit::Negative)]);
    }

    impl AnswerCache {
        fn snapshot_pending(&self) -> usize {
            self.pending.lock().unwrap().len()
        }
    }
}
