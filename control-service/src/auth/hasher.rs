//! Password hashing as a bounded resource.
//!
//! Each argon2 hash or verification takes 19 MiB and tens of milliseconds
//! of a core. At most `concurrency` run at once, each in a memory buffer
//! taken from a pool of at most `concurrency` buffers (kept, not freed, so
//! the allocator never holds more than that); at most `queue` more wait
//! for a turn. Beyond that a request is refused at once ([`Busy`]), never
//! queued without bound. A request admitted but cancelled by its caller
//! keeps its turn until its hash ends, so cancelling cannot start more.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::password::Memory;

/// How long a refused caller is told to wait.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    /// Hashes at once (each holds one 19 MiB buffer).
    pub concurrency: usize,
    /// Requests that may wait for a turn.
    pub queue: usize,
}

impl Default for HashLimits {
    fn default() -> Self {
        Self { concurrency: default_concurrency(), queue: 8 }
    }
}

/// The number of CPUs this process may use (cgroup quotas included), at
/// most 4: each hash holds 19 MiB, and 4 of them stay well inside the
/// deployment's 256 MiB memory limit.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get).clamp(1, 4)
}

/// Every turn is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once")]
pub struct Busy;

/// A hash failed to run (its task panicked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the password hashing task failed: {0}")]
pub struct Failed(pub String);

#[derive(Debug)]
struct Inner {
    /// `concurrency + queue` permits: a request holds one from admission
    /// to the end of its hash.
    admission: Arc<Semaphore>,
    /// `concurrency` permits: held while hashing.
    running: Arc<Semaphore>,
    /// Buffers not in use (at most `concurrency` ever exist).
    memory: Mutex<Vec<Memory>>,
}

/// The bounded password hasher (cheap to clone; clones share the bounds).
#[derive(Debug, Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

impl Hasher {
    pub fn new(limits: HashLimits) -> Self {
        let concurrency = limits.concurrency.max(1);
        Self {
            inner: Arc::new(Inner {
                admission: Arc::new(Semaphore::new(concurrency + limits.queue)),
                running: Arc::new(Semaphore::new(concurrency)),
                memory: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A turn, or [`Busy`] at once when `concurrency + queue` requests hold one.
    pub fn admit(&self) -> Result<Admission, Busy> {
        let permit = self.inner.admission.clone().try_acquire_owned().map_err(|_| Busy)?;
        Ok(Admission { permit, inner: self.inner.clone() })
    }
}

/// An admitted request: it runs one hash.
#[derive(Debug)]
pub struct Admission {
    permit: OwnedSemaphorePermit,
    inner: Arc<Inner>,
}

impl Admission {
    /// Waits for a free slot (behind at most `queue` others) and runs `f` on
    /// the blocking pool with a pooled buffer.
    pub async fn run<T: Send + 'static>(self, f: impl FnOnce(&mut Memory) -> T + Send + 'static) -> Result<T, Failed> {
        let running = self.inner.running.clone().acquire_owned().await.map_err(|e| Failed(e.to_string()))?;
        let Admission { permit, inner } = self;
        tokio::task::spawn_blocking(move || {
            let mut memory = inner.memory.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default();
            let out = f(&mut memory);
            inner.memory.lock().unwrap_or_else(PoisonError::into_inner).push(memory);
            // The turn ends with the hash, even when the caller went away.
            drop((running, permit));
            out
        })
        .await
        .map_err(|e| Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_concurrency_run_and_queue_wait_the_rest_are_refused() {
        let hasher = Hasher::new(HashLimits { concurrency: 2, queue: 3 });
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut admitted = Vec::new();
        let mut refused = 0;
        for _ in 0..10 {
            match hasher.admit() {
                Ok(turn) => admitted.push(turn),
                Err(Busy) => refused += 1,
            }
        }
        assert_eq!((admitted.len(), refused), (5, 5), "2 running + 3 queued");
        let tasks: Vec<_> = admitted
            .into_iter()
            .map(|turn| {
                let (running, peak) = (running.clone(), peak.clone());
                tokio::spawn(turn.run(move |memory| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    memory.resize(4, argon2::Block::default());
                    std::thread::sleep(Duration::from_millis(50));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        let buffers = hasher.inner.memory.lock().unwrap().len();
        assert!((1..=2).contains(&buffers), "buffers are reused, at most one per slot: {buffers}");
        assert!(hasher.admit().is_ok(), "turns come back");
    }
}
