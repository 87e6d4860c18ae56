//! The leader lease and the elector.
//!
//! One lease row in the control database; acquiring or renewing it is one
//! statement judged by the database's clock, and each new holder gets a
//! larger term (the fencing token every job run carries into the ledger).
//! A leader renews every ttl/3. Its leadership is only good until the renew
//! deadline, measured on this process's monotonic clock (tokio's, which
//! tests pause) from before the last successful renew was sent, and shorter than the ttl: a leader that
//! cannot reach the database stops acting before its lease can expire and
//! another replica can take it. Followers retry every retry period. On
//! shutdown the leader releases the lease (expires_at = now) so a follower
//! takes over at its next retry.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{metrics::Metrics, store::LeaseStore};

/// The lease the scheduler runs under.
pub const SCHEDULER_LEASE: &str = "scheduler";

/// How the elector behaves.
#[derive(Debug, Clone)]
pub struct ElectorSettings {
    pub replica: String,
    pub ttl: Duration,
    /// After this long without a successful renew, stop acting (< ttl).
    pub renew_deadline: Duration,
    /// How often a follower tries to take the lease.
    pub retry: Duration,
}

impl ElectorSettings {
    /// A leader renews every ttl/3.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

/// What this replica is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Follower,
    Leader { term: i64, valid_until: Instant },
}

/// A read-only view of this replica's leadership, for the scheduler and
/// the API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    state: watch::Receiver<State>,
    replica: Arc<str>,
}

impl Leadership {
    /// The term this replica leads with, if it leads now: it holds the
    /// lease and is inside its renew deadline.
    pub fn term(&self) -> Option<i64> {
        match *self.state.borrow() {
            State::Leader { term, valid_until } if Instant::now() < valid_until => Some(term),
            _ => None,
        }
    }

    pub fn is_leading(&self) -> bool {
        self.term().is_some()
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// A replica that leads with `term` for the next minute (tests).
    #[cfg(test)]
    pub fn fixed(replica: &str, term: i64) -> Self {
        let valid_until = Instant::now() + Duration::from_secs(60);
        let (sender, state) = watch::channel(State::Leader { term, valid_until });
        // The receiver keeps the last value after the sender goes.
        drop(sender);
        Self { state, replica: replica.into() }
    }

    /// A replica that follows (tests).
    #[cfg(test)]
    pub fn follower(replica: &str) -> Self {
        let (_, state) = watch::channel(State::Follower);
        Self { state, replica: replica.into() }
    }

    /// Resolves at the next change of state (leader ↔ follower, new term).
    pub async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }
}

/// Runs the election for this replica.
#[derive(Debug)]
pub struct Elector {
    store: Arc<dyn LeaseStore>,
    settings: ElectorSettings,
    state: watch::Sender<State>,
    metrics: Metrics,
}

impl Elector {
    pub fn new(store: Arc<dyn LeaseStore>, settings: ElectorSettings, metrics: Metrics) -> (Self, Leadership) {
        let (state, receiver) = watch::channel(State::Follower);
        let leadership = Leadership { state: receiver, replica: settings.replica.clone().into() };
        (Self { store, settings, state, metrics }, leadership)
    }

    fn publish(&self, next: State) {
        let previous = *self.state.borrow();
        match (previous, next) {
            (State::Follower, State::Leader { term, .. }) => {
                tracing::info!(replica = %self.settings.replica, term, "leading");
            }
            (State::Leader { term: old, .. }, State::Leader { term, .. }) if old != term => {
                tracing::info!(replica = %self.settings.replica, term, "leading with a new term");
            }
            (State::Leader { term, .. }, State::Follower) => {
                tracing::warn!(replica = %self.settings.replica, term, "no longer leading");
            }
            _ => {}
        }
        if let State::Leader { term, .. } = next {
            self.metrics.set_leader(true, term);
        } else {
            self.metrics.set_leader(false, 0);
        }
        self.state.send_replace(next);
    }

    /// One acquire/renew attempt; returns whether this replica now leads.
    async fn attempt(&self) -> bool {
        let sent = Instant::now();
        let ttl_ms = i64::try_from(self.settings.ttl.as_millis()).unwrap_or(i64::MAX);
        // A renew that takes longer than its own period is a failed renew.
        let call = self.store.acquire_lease(SCHEDULER_LEASE, &self.settings.replica, ttl_ms);
        match tokio::time::timeout(self.settings.renew_every(), call).await {
            Ok(Ok(Some(grant))) => {
                self.publish(State::Leader { term: grant.term, valid_until: sent + self.settings.renew_deadline });
                true
            }
            Ok(Ok(None)) => {
                self.publish(State::Follower);
                false
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                self.metrics.lease_renew_failed();
                let state = *self.state.borrow();
                match state {
                    State::Leader { valid_until, .. } if Instant::now() < valid_until => {
                        tracing::warn!(%error, "cannot renew the lease; still inside the renew deadline");
                        true
                    }
                    State::Leader { .. } => {
                        tracing::error!(%error, "cannot renew the lease past the renew deadline: stepping down");
                        self.publish(State::Follower);
                        false
                    }
                    State::Follower => {
                        tracing::debug!(%error, "cannot reach the lease");
                        false
                    }
                }
            }
        }
    }

    /// Elects until `stop` is cancelled; then stops acting and returns the
    /// term it held, for [`Elector::release`].
    pub async fn run(&self, stop: CancellationToken) -> Option<i64> {
        loop {
            let leading = self.attempt().await;
            let pause = if leading { self.settings.renew_every() } else { self.settings.retry };
            // Step down on time even if the next renew is late.
            let deadline = match *self.state.borrow() {
                State::Leader { valid_until, .. } => Some(valid_until),
                State::Follower => None,
            };
            let wake = Instant::now() + pause;
            let wake = match deadline {
                Some(d) => wake.min(d),
                None => wake,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        let held = match *self.state.borrow() {
            State::Leader { term, .. } => Some(term),
            State::Follower => None,
        };
        if held.is_some() {
            self.publish(State::Follower);
        }
        held
    }

    /// Gives the lease up so a follower takes over at once (shutdown).
    pub async fn release(&self, term: Option<i64>) {
        let Some(term) = term else { return };
        match self.store.release_lease(SCHEDULER_LEASE, &self.settings.replica, term).await {
            Ok(true) => tracing::info!(term, "lease released"),
            Ok(false) => tracing::info!(term, "lease already taken over; nothing to release"),
            Err(error) => tracing::warn!(%error, "cannot release the lease; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The elector on tokio's paused clock, over a lease in memory that the
    //! tests make slow or failing: no real sleeps, exact times.

    use std::sync::atomic::Ordering;

    use tokio::task::JoinHandle;

    use super::*;
    use crate::store::testing::MemoryLease;

    fn settings() -> ElectorSettings {
        ElectorSettings {
            replica: "r1".into(),
            ttl: Duration::from_secs(30),
            renew_deadline: Duration::from_secs(20),
            retry: Duration::from_secs(2),
        }
    }

    fn start(lease: &Arc<MemoryLease>) -> (Leadership, CancellationToken, JoinHandle<Option<i64>>) {
        let (elector, leadership) = Elector::new(lease.clone(), settings(), Metrics::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { elector.run(stop).await }
        });
        (leadership, stop, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_renew_hangs_steps_down_at_its_renew_deadline() {
        let lease = Arc::new(MemoryLease::default());
        let (mut leadership, stop, task) = start(&lease);
        assert!(leadership.changed().await);
        // The acquire that made it leader was sent now: the deadline counts from here.
        let acquired = Instant::now();
        assert_eq!(leadership.term(), Some(1));
        lease.hangs.store(true, Ordering::SeqCst);
        assert!(leadership.changed().await);
        assert_eq!(leadership.term(), None, "stepped down");
        assert_eq!(acquired.elapsed(), settings().renew_deadline, "at the renew deadline");
        assert!(acquired.elapsed() < settings().ttl, "before the lease can expire and another replica take it");
        stop.cancel();
        assert_eq!(task.await.unwrap(), None, "a follower holds nothing to release");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_keeps_leading_through_failed_renews_until_the_deadline_then_comes_back() {
        let lease = Arc::new(MemoryLease::default());
        let (mut leadership, stop, task) = start(&lease);
        assert!(leadership.changed().await);
        let acquired = Instant::now();
        lease.down.store(true, Ordering::SeqCst);
        // The renew at ttl/3 fails; it still leads inside the deadline.
        tokio::time::sleep_until(acquired + Duration::from_secs(15)).await;
        assert!(lease.asked.load(Ordering::SeqCst) >= 2, "a renew was tried");
        assert_eq!(leadership.term(), Some(1));
        assert!(leadership.changed().await);
        assert_eq!((leadership.term(), acquired.elapsed()), (None, settings().renew_deadline));
        // The database is back: a follower tries again every retry period.
        lease.down.store(false, Ordering::SeqCst);
        assert!(leadership.changed().await);
        assert_eq!(leadership.term(), Some(1));
        assert_eq!(acquired.elapsed(), settings().renew_deadline + settings().retry);
        stop.cancel();
        assert_eq!(task.await.unwrap(), Some(1), "a leader returns its term for release");
    }
}
