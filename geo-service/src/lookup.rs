//! The resolution order, in one place: memory and the local databases →
//! the persistent cache of fallback answers → the online fallback (when it
//! is enabled and the request allows it) → a negative, recorded only when
//! the fallback was asked and could not place the address.
//!
//! [`Lookups`] works on domain types. The caller (the gRPC layer) hands it
//! the raw inputs and a conversion from [`Resolution`] to its own result
//! type, so a result is built once, in place, while the database snapshot
//! it borrows from is held. Outcomes are counted here, from the
//! resolutions, not from the converted results.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use rustc_hash::FxBuildHasher;

use crate::{
    cache::{AnswerCache, CacheHit, CacheSnapshot},
    clock::unix_now,
    fallback::{Fallback, FallbackAnswer, FallbackSnapshot},
    metrics::{Metrics, Tally},
    mmdb::DatabaseSet,
    resolve::{Outcome, Resolution, Resolver, echo},
    store::{CachedAnswer, StoreError},
};

/// Batches up to this size are resolved on the async runtime; larger ones
/// move to rayon's pool so a big batch never stalls other requests.
const INLINE_BATCH: usize = 64;

/// Why a lookup operation failed as a whole (items fail one by one).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("cache database unavailable")]
    Unavailable(#[from] StoreError),
    #[error("lookup worker panicked")]
    WorkerPanicked,
}

/// Turns one answer into the caller's result type; takes the input to move
/// it into the result.
pub type Convert<T> = for<'a> fn(String, Resolution<'a>) -> T;

/// What one ReResolve did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReResolved {
    pub attempted: u32,
    pub resolved: u32,
}

/// What `GetInfo` reports.
#[derive(Debug)]
pub struct Snapshot {
    pub databases: Arc<DatabaseSet>,
    pub lookups: [(Outcome, u64); Outcome::ALL.len()],
    pub cache: CacheSnapshot,
    pub fallback: Option<FallbackSnapshot>,
}

/// The lookup service: the local databases, the answer cache and the
/// optional fallback, in the order of the design.
#[derive(Debug, Clone)]
pub struct Lookups {
    resolver: Resolver,
    cache: Arc<AnswerCache>,
    fallback: Option<Arc<Fallback>>,
    metrics: Metrics,
}

/// What the local step says of one input besides its result: its outcome,
/// and its address and text when the databases missed it.
type Step = (Outcome, Option<(IpAddr, String)>);

/// What the cache or the fallback said of one distinct address.
#[derive(Debug)]
enum Remote {
    /// Placed by the fallback: earlier (from the cache) or now (`true`).
    Placed(Arc<CachedAnswer>, bool),
    /// The fallback could not place it.
    Nobody,
    Failed(String),
}

/// An input the databases missed: where it is, its address and its text.
#[derive(Debug)]
struct Miss {
    index: usize,
    ip: IpAddr,
    input: String,
}

impl Lookups {
    pub fn new(resolver: Resolver, cache: Arc<AnswerCache>, fallback: Option<Arc<Fallback>>, metrics: Metrics) -> Self {
        Self { resolver, cache, fallback, metrics }
    }

    /// Answers every input, in order, one result each.
    pub async fn resolve<T: Send + 'static>(
        &self,
        inputs: Vec<String>,
        allow_remote: bool,
        convert: Convert<T>,
    ) -> Result<Vec<T>, LookupError> {
        let (mut results, outcomes, misses) = self.local(inputs, convert).await?;
        let mut tally = Tally::default();
        for outcome in outcomes {
            tally.add(outcome);
        }
        if !misses.is_empty() {
            self.remote(&mut results, &mut tally, misses, allow_remote, convert).await;
        }
        self.metrics.count_lookups(&tally);
        Ok(results)
    }

    /// The local step: every input against one snapshot of the databases,
    /// on rayon's pool when the batch is large. Returns the results, their
    /// outcomes, and the inputs the databases missed.
    async fn local<T: Send + 'static>(
        &self,
        inputs: Vec<String>,
        convert: Convert<T>,
    ) -> Result<(Vec<T>, Vec<Outcome>, Vec<Miss>), LookupError> {
        let each = move |input: String, resolution: Resolution<'_>| {
            let outcome = resolution.outcome();
            let miss = match &resolution {
                Resolution::NotFound { ip } => Some((*ip, input.clone())),
                _ => None,
            };
            let input = if outcome == Outcome::Invalid { echo(input) } else { input };
            (convert(input, resolution), (outcome, miss))
        };
        let (results, steps): (Vec<T>, Vec<Step>) = if inputs.len() <= INLINE_BATCH {
            self.resolver.resolve_each(inputs, each).into_iter().unzip()
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let resolver = self.resolver.clone();
            rayon::spawn(move || {
                // A panic must not abort the process (rayon's default); it
                // fails this request.
                let done =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| resolver.resolve_par(inputs, each)));
                let _ = tx.send(done);
            });
            match rx.await {
                Ok(Ok(done)) => done,
                Ok(Err(_)) | Err(_) => return Err(LookupError::WorkerPanicked),
            }
        };
        let mut outcomes = Vec::with_capacity(steps.len());
        let mut misses = Vec::new();
        for (index, (outcome, miss)) in steps.into_iter().enumerate() {
            outcomes.push(outcome);
            if let Some((ip, input)) = miss {
                misses.push(Miss { index, ip, input });
            }
        }
        Ok((results, outcomes, misses))
    }

    /// The remote steps for what the databases missed: the cache, then the
    /// fallback when allowed. Each distinct address is asked about once.
    async fn remote<T>(
        &self,
        results: &mut [T],
        tally: &mut Tally,
        misses: Vec<Miss>,
        allow_remote: bool,
        convert: Convert<T>,
    ) {
        let mut distinct: HashMap<IpAddr, usize, FxBuildHasher> = HashMap::default();
        let mut ips = Vec::new();
        for miss in &misses {
            distinct.entry(miss.ip).or_insert_with(|| {
                ips.push(miss.ip);
                ips.len() - 1
            });
        }
        let mut answers: Vec<Option<Remote>> = self
            .cache
            .lookup(&ips)
            .await
            .into_iter()
            .map(|hit| match hit {
                Some(CacheHit::Answer(row)) => Some(Remote::Placed(row, false)),
                Some(CacheHit::Negative) => Some(Remote::Nobody),
                None => None,
            })
            .collect();
        if allow_remote && let Some(fallback) = &self.fallback {
            let unknown: Vec<usize> = (0..ips.len()).filter(|&i| answers[i].is_none()).collect();
            if !unknown.is_empty() {
                let asked: Vec<IpAddr> = unknown.iter().map(|&i| ips[i]).collect();
                let replies = fallback.lookup(&asked).await;
                let now = unix_now();
                let mut rows = Vec::new();
                for ((i, ip), reply) in unknown.into_iter().zip(asked).zip(replies) {
                    answers[i] = Some(match reply {
                        FallbackAnswer::Found(place) => {
                            let row = Arc::new(CachedAnswer::placed(ip.to_string(), place, now));
                            rows.push((ip, CachedAnswer::clone(&row)));
                            Remote::Placed(row, true)
                        }
                        FallbackAnswer::NotFound => {
                            rows.push((ip, CachedAnswer::negative(ip.to_string(), now)));
                            Remote::Nobody
                        }
                        FallbackAnswer::Failed(error) => Remote::Failed(error),
                    });
                }
                self.cache.record(rows);
            }
        }
        for miss in misses {
            let ip = miss.ip;
            let answer = match &answers[distinct[&ip]] {
                // Still not found, as the local step said.
                None | Some(Remote::Nobody) => continue,
                Some(Remote::Placed(row, fresh)) => placed(ip, row, *fresh),
                Some(Remote::Failed(error)) => Resolution::UpstreamError { ip, error: error.clone() },
            };
            tally.remove(Outcome::NotFound);
            tally.add(answer.outcome());
            results[miss.index] = convert(miss.input, answer);
        }
    }

    /// Retries up to `limit` negatives, the longest-unresolved first: the
    /// databases first (an address a newer build places leaves the cache),
    /// then the fallback when it is enabled. A retry is not a sighting: it
    /// leaves `last_seen` as it was.
    pub async fn re_resolve(&self, limit: u32) -> Result<ReResolved, LookupError> {
        let negatives = self.cache.negatives(limit).await?;
        let attempted = u32::try_from(negatives.len()).unwrap_or(u32::MAX);
        let set = self.resolver.databases();
        let (placed_locally, still): (Vec<IpAddr>, Vec<IpAddr>) =
            negatives.into_iter().partition(|ip| matches!(set.lookup(*ip), Ok(Some(_))));
        if !placed_locally.is_empty() {
            self.cache.forget(&placed_locally).await?;
        }
        let now = unix_now();
        let replies = match &self.fallback {
            Some(fallback) if !still.is_empty() => fallback.lookup(&still).await,
            _ => Vec::new(),
        };
        let mut by_fallback = 0usize;
        let mut replies = replies.into_iter();
        let rows = still
            .into_iter()
            .map(|ip| {
                let row = match replies.next() {
                    Some(FallbackAnswer::Found(place)) => {
                        by_fallback += 1;
                        CachedAnswer::placed(ip.to_string(), place, now)
                    }
                    // Still unknown: resolved_at is now, so the next call reaches others first.
                    _ => CachedAnswer::negative(ip.to_string(), now),
                };
                // `last_seen: 0` keeps the stored one.
                (ip, CachedAnswer { last_seen: 0, ..row })
            })
            .collect();
        self.cache.record(rows);
        self.cache.flush().await?;
        let resolved = u32::try_from(placed_locally.len() + by_fallback).unwrap_or(u32::MAX);
        tracing::info!(attempted, resolved, "re-resolved negatives");
        Ok(ReResolved { attempted, resolved })
    }

    /// Deletes cache rows nobody asked about for `older_than`.
    pub async fn purge(&self, older_than: Duration) -> Result<u64, LookupError> {
        let deleted = self.cache.purge(older_than).await?;
        tracing::info!(deleted, older_than_secs = older_than.as_secs(), "purged stale cache rows");
        Ok(deleted)
    }

    /// The loaded databases, the counters, the cache and the fallback.
    pub async fn snapshot(&self) -> Snapshot {
        Snapshot {
            databases: self.resolver.databases(),
            lookups: Outcome::ALL.map(|outcome| (outcome, self.metrics.lookups(outcome))),
            cache: self.cache.snapshot().await,
            fallback: self.fallback.as_ref().map(|f| f.snapshot()),
        }
    }
}

/// The resolution of a fallback answer (`row` holds a place).
fn placed(ip: IpAddr, row: &CachedAnswer, fresh: bool) -> Resolution<'static> {
    match &row.placed {
        Some(placed) => Resolution::Placed { ip, placed: placed.clone(), resolved_at: row.resolved_at, fresh },
        None => Resolution::NotFound { ip },
    }
}
