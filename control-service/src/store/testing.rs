//! Test helpers: both real backends for the contract suites, and small
//! in-memory stores for tests that pause tokio's clock (a real pool's
//! timeouts would fire while time jumps).

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use bangui_testkit::postgres::PgSchema;

use super::{
    LeaseStore, PgStore, RunLedger, SettingsStore, SqliteStore, StoreError,
    lease::{JobRun, Lease, LeaseGrant, NewRun, RequestedRun, StartedRun},
};

/// A migrated SQLite store in a file of `dir`.
pub(crate) async fn sqlite_in(dir: &tempfile::TempDir, file: &str) -> SqliteStore {
    SqliteStore::connect(&sqlite_url(dir, file)).await.unwrap()
}

/// The URL of `file` in `dir`.
pub(crate) fn sqlite_url(dir: &tempfile::TempDir, file: &str) -> String {
    format!("sqlite://{}", dir.path().join(file).display())
}

/// A migrated PostgreSQL store in a new schema `<prefix>_<unique>`.
pub(crate) async fn postgres(prefix: &str) -> (PgStore, PgSchema) {
    let schema = PgSchema::create(prefix).await;
    let store = PgStore::connect_with(schema.options()).await.unwrap();
    (store, schema)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A lease only this replica asks for: granted (term 1) while the database
/// is up, refused with an error while it is `down`, never answered while
/// it `hangs`.
#[derive(Debug, Default)]
pub(crate) struct MemoryLease {
    pub(crate) down: AtomicBool,
    pub(crate) hangs: AtomicBool,
    pub(crate) asked: AtomicUsize,
}

#[async_trait::async_trait]
impl LeaseStore for MemoryLease {
    async fn acquire_lease(&self, _name: &str, _holder: &str, ttl_ms: i64) -> Result<Option<LeaseGrant>, StoreError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.hangs.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("the database is down".into()));
        }
        Ok(Some(LeaseGrant { term: 1, acquired_at: 0, expires_at: ttl_ms, db_now: 0 }))
    }

    async fn release_lease(&self, _name: &str, _holder: &str, _term: i64) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn lease(&self, _name: &str) -> Result<Option<Lease>, StoreError> {
        Ok(None)
    }
}

/// A run ledger in memory: one run per (job, slot); no term check (the
/// tests that use it lead throughout). The first `finish_failures` ends of
/// runs fail, as while the database is away.
#[derive(Debug, Default)]
pub(crate) struct MemoryLedger {
    runs: Mutex<Vec<JobRun>>,
    /// (job, requested at (ms), taken).
    requests: Mutex<Vec<(String, i64, bool)>>,
    pub(crate) finish_failures: AtomicUsize,
    pub(crate) finish_calls: AtomicUsize,
}

impl MemoryLedger {
    /// Every run, oldest first.
    pub(crate) fn runs(&self) -> Vec<JobRun> {
        lock(&self.runs).clone()
    }

    fn insert(&self, job: &str, scheduled_for: i64, term: i64, replica: &str, trigger: &str) -> Option<i64> {
        let mut runs = lock(&self.runs);
        if runs.iter().any(|r| r.job == job && r.scheduled_for == scheduled_for) {
            return None;
        }
        let id = i64::try_from(runs.len()).unwrap() + 1;
        runs.push(JobRun {
            id,
            job: job.into(),
            scheduled_for,
            term,
            replica: replica.into(),
            trigger: trigger.into(),
            started_at: 0,
            finished_at: None,
            status: "running".into(),
            error: None,
        });
        Some(id)
    }
}

#[async_trait::async_trait]
impl RunLedger for MemoryLedger {
    async fn start_run(&self, run: &NewRun<'_>) -> Result<Option<i64>, StoreError> {
        Ok(self.insert(run.job, run.scheduled_for, run.term, run.replica, run.trigger))
    }

    async fn finish_run(&self, id: i64, status: &str, error: Option<&str>) -> Result<(), StoreError> {
        self.finish_calls.fetch_add(1, Ordering::SeqCst);
        if self.finish_failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Corrupt("the database is away".into()));
        }
        let mut runs = lock(&self.runs);
        let run = runs.iter_mut().find(|r| r.id == id).ok_or_else(|| StoreError::Corrupt(format!("no run {id}")))?;
        run.finished_at = Some(1);
        run.status = status.into();
        run.error = error.map(Into::into);
        Ok(())
    }

    async fn last_runs(&self) -> Result<Vec<JobRun>, StoreError> {
        let mut last: Vec<JobRun> = Vec::new();
        for run in self.runs().into_iter().rev() {
            if !last.iter().any(|r| r.job == run.job) {
                last.push(run);
            }
        }
        last.sort_by(|a, b| a.job.cmp(&b.job));
        Ok(last)
    }

    async fn request_run(&self, job: &str, _requested_by: &str) -> Result<i64, StoreError> {
        let mut requests = lock(&self.requests);
        let id = i64::try_from(requests.len()).unwrap() + 1;
        requests.push((job.into(), id, false));
        Ok(id)
    }

    async fn requested_jobs(&self) -> Result<Vec<String>, StoreError> {
        let mut jobs: Vec<String> = lock(&self.requests).iter().filter(|r| !r.2).map(|r| r.0.clone()).collect();
        jobs.sort();
        jobs.dedup();
        Ok(jobs)
    }

    async fn start_requested_run(&self, run: &RequestedRun<'_>) -> Result<Option<StartedRun>, StoreError> {
        let mut requests = lock(&self.requests);
        let Some(slot) = requests.iter().filter(|r| r.0 == run.job && !r.2).map(|r| r.1).max() else {
            return Ok(None);
        };
        let Some(id) = self.insert(run.job, slot, run.term, run.replica, "manual") else { return Ok(None) };
        for request in requests.iter_mut().filter(|r| r.0 == run.job) {
            request.2 = true;
        }
        Ok(Some(StartedRun { id, scheduled_for: slot }))
    }
}

/// Runtime settings rows in memory.
#[derive(Debug, Default)]
pub(crate) struct MemorySettings(Mutex<Vec<(String, String)>>);

#[async_trait::async_trait]
impl SettingsStore for MemorySettings {
    async fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut rows = lock(&self.0).clone();
        rows.sort();
        Ok(rows)
    }

    async fn put_settings(&self, values: &[(String, String)], _at: i64) -> Result<(), StoreError> {
        let mut rows = lock(&self.0);
        for (key, value) in values {
            rows.retain(|(k, _)| k != key);
            rows.push((key.clone(), value.clone()));
        }
        Ok(())
    }
}
