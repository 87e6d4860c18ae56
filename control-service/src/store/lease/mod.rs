//! The leader lease and the run ledger: the two tables that decide who runs
//! a job and that a slot runs at most once.
//!
//! Lease and ledger statements are judged by the **database's** clock, which
//! each dialect spells differently; they are written once here with a
//! `{now}` hole (and `{for_share}` for the row lock a run takes on its
//! lease) that each backend fills in once (`Statements::new`, in the
//! store's `sqlite.rs` and `postgres.rs`, handed out by
//! `Dialect::lease_statements`); `sql.rs` binds and runs them on either.

mod sql;

#[cfg(test)]
mod contract;

use super::StoreError;

/// A lease as stored. Times are Unix milliseconds of the database's clock;
/// `db_now` is that clock when the row was read.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub term: i64,
    pub acquired_at: i64,
    pub renewed_at: i64,
    pub expires_at: i64,
    pub db_now: i64,
}

/// What acquiring or renewing a lease gave: the term (new when the holder
/// changed), and the database's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseGrant {
    pub term: i64,
    pub acquired_at: i64,
    pub expires_at: i64,
    pub db_now: i64,
}

/// A run about to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun<'a> {
    pub job: &'a str,
    /// The slot (Unix ms): the cron time, or the request time of a manual run.
    pub scheduled_for: i64,
    /// The caller's term; the run starts only if it is still the lease's.
    pub term: i64,
    pub replica: &'a str,
    /// `schedule` or `manual`.
    pub trigger: &'a str,
    /// The lease that gates runs.
    pub lease: &'a str,
}

/// A row of the run ledger.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    pub scheduled_for: i64,
    pub term: i64,
    pub replica: String,
    pub trigger: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: String,
    pub error: Option<String>,
}

/// The run that answers a job's open "run now" requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedRun<'a> {
    pub job: &'a str,
    /// The caller's term; the run starts only if it is still the lease's.
    pub term: i64,
    pub replica: &'a str,
    /// The lease that gates runs.
    pub lease: &'a str,
}

/// A run started for "run now" requests: its ledger id and its slot (the
/// time of the latest request it answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedRun {
    pub id: i64,
    pub scheduled_for: i64,
}

/// The leader lease.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + std::fmt::Debug {
    /// Acquires `name` for `holder`, or renews it, for `ttl_ms` of the
    /// database's clock: one statement, judged by that clock. `None` when
    /// another holder's lease has not expired. A change of holder (or a
    /// holder coming back after its lease expired) gets a larger term.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<LeaseGrant>, StoreError>;
    /// Ends `holder`'s lease now, if it still holds `term`; true if it did.
    async fn release_lease(&self, name: &str, holder: &str, term: i64) -> Result<bool, StoreError>;
    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError>;
}

/// The run ledger and the "run now" requests.
#[async_trait::async_trait]
pub trait RunLedger: Send + Sync + std::fmt::Debug {
    /// Inserts a run's ledger row, in one statement that also checks that
    /// `run.term` is still the lease's current, unexpired term. `None`: no
    /// row, no run (the slot already ran, or the term is stale).
    async fn start_run(&self, run: &NewRun<'_>) -> Result<Option<i64>, StoreError>;
    async fn finish_run(&self, id: i64, status: &str, error: Option<&str>) -> Result<(), StoreError>;
    /// The latest run of each job.
    async fn last_runs(&self) -> Result<Vec<JobRun>, StoreError>;
    /// Records a "run now" request; returns its id.
    async fn request_run(&self, job: &str, requested_by: &str) -> Result<i64, StoreError>;
    /// The jobs that have open "run now" requests.
    async fn requested_jobs(&self) -> Result<Vec<String>, StoreError>;
    /// One transaction: takes every open "run now" request of `run.job`
    /// (for `run.replica`) and inserts the ledger row of the one `manual`
    /// run that answers them all, slot = the latest request's time, under
    /// the same term check as [`RunLedger::start_run`]. `None`: no open
    /// request, or no row (the term is stale), and then nothing is taken:
    /// the requests wait for a replica that can run them. A request is
    /// taken if and only if a run after it is recorded.
    async fn start_requested_run(&self, run: &RequestedRun<'_>) -> Result<Option<StartedRun>, StoreError>;
}

/// The trigger of a run that answers "run now" requests.
const MANUAL: &str = "manual";

const LAST_RUNS: &str = "SELECT id, job, scheduled_for, term, replica, trigger, started_at, finished_at, status, error \
                         FROM job_runs WHERE id IN (SELECT max(id) FROM job_runs GROUP BY job) ORDER BY job";
const REQUESTED_JOBS: &str = "SELECT DISTINCT job FROM job_requests WHERE taken_at IS NULL ORDER BY job";
/// How many runs job $1 has for slot $2.
const SLOT_RUNS: &str = "SELECT count(*) FROM job_runs WHERE job = $1 AND scheduled_for = $2";

/// Acquires or renews lease $1 for holder $2 for $3 ms.
const ACQUIRE_LEASE: &str = "INSERT INTO leases (name, holder, term, acquired_at, renewed_at, expires_at) \
     VALUES ($1, $2, 1, {now}, {now}, {now} + $3) \
     ON CONFLICT (name) DO UPDATE SET \
     term = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > {now} \
     THEN leases.term ELSE leases.term + 1 END, \
     acquired_at = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > {now} \
     THEN leases.acquired_at ELSE {now} END, \
     holder = excluded.holder, renewed_at = {now}, expires_at = {now} + $3 \
     WHERE leases.holder = excluded.holder OR leases.expires_at <= {now} \
     RETURNING term, acquired_at, expires_at, {now} AS db_now";
/// Ends lease $1 now if holder $2 still holds term $3.
const RELEASE_LEASE: &str = "UPDATE leases SET expires_at = {now} WHERE name = $1 AND holder = $2 AND term = $3";
const SELECT_LEASE: &str =
    "SELECT name, holder, term, acquired_at, renewed_at, expires_at, {now} AS db_now FROM leases WHERE name = $1";
/// Records a run ($1 job, $2 slot, $3 term, $4 replica, $5 trigger, $6
/// lease) only under the current, unexpired lease of that holder and term,
/// and only once per slot; returns its id.
const START_RUN: &str = "INSERT INTO job_runs (job, scheduled_for, term, replica, trigger, started_at, status) \
     SELECT $1, $2, $3, $4, $5, {now}, 'running' \
     WHERE EXISTS (SELECT 1 FROM leases WHERE name = $6 AND holder = $4 AND term = $3 AND expires_at > {now} {for_share}) \
     ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING id";
/// Ends run $1 with status $2 and error $3.
const FINISH_RUN: &str = "UPDATE job_runs SET finished_at = {now}, status = $2, error = $3 WHERE id = $1";
/// Requests a run of job $1 for replica $2.
const INSERT_REQUEST: &str =
    "INSERT INTO job_requests (job, requested_at, requested_by) VALUES ($1, {now}, $2) RETURNING id";
/// Takes the open requests of job $2 for replica $1.
const TAKE_REQUESTS: &str = "UPDATE job_requests SET taken_at = {now}, taken_by = $1 WHERE job = $2 AND taken_at IS NULL RETURNING requested_at";

/// The statements judged by the database's clock, in one dialect.
#[derive(Debug)]
pub(crate) struct Statements {
    acquire_lease: String,
    release_lease: String,
    select_lease: String,
    start_run: String,
    finish_run: String,
    insert_request: String,
    take_requests: String,
}

impl Statements {
    /// `now_ms`: the database's clock in Unix milliseconds; `for_share`:
    /// the lock a run's term check takes on the lease row (none where the
    /// database has one writer).
    pub(crate) fn new(now_ms: &str, for_share: &str) -> Self {
        let render = |template: &str| template.replace("{now}", now_ms).replace(" {for_share}", for_share);
        Self {
            acquire_lease: render(ACQUIRE_LEASE),
            release_lease: render(RELEASE_LEASE),
            select_lease: render(SELECT_LEASE),
            start_run: render(START_RUN),
            finish_run: render(FINISH_RUN),
            insert_request: render(INSERT_REQUEST),
            take_requests: render(TAKE_REQUESTS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hole_is_filled() {
        let s = Statements::new("NOW_MS", " FOR SHARE");
        for sql in [
            &s.acquire_lease,
            &s.release_lease,
            &s.select_lease,
            &s.start_run,
            &s.finish_run,
            &s.insert_request,
            &s.take_requests,
        ] {
            assert!(!sql.contains('{') && sql.contains("NOW_MS"), "{sql}");
        }
        assert!(s.start_run.contains("expires_at > NOW_MS FOR SHARE)"), "{}", s.start_run);
        assert!(Statements::new("N", "").start_run.contains("expires_at > N)"));
    }
}
