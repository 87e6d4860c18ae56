//! Who leads and what the jobs do: the domain behind `ClusterService`.
//! Any replica answers; "run now" only records a request, which the
//! leader's scheduler takes (see [`crate::jobs`]).

use std::{collections::HashMap, sync::Arc};

pub use crate::store::lease::{JobRun, Lease};
use crate::{
    blocklist::Blocklists,
    clock::Clock,
    error::{InvalidArgument, StoreError},
    jobs::{JobKind, next_run, planned},
    leader::{Leadership, SCHEDULER_LEASE},
    settings::RuntimeSettings,
    store::{LeaseStore, RunLedger},
};

/// The scheduler's lease as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// `None`: nobody ever took it.
    pub lease: Option<Lease>,
    pub replica_id: String,
    pub this_replica_leads: bool,
}

/// A job: its schedule, when it runs next, and its latest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub name: String,
    pub schedule: String,
    /// Unix seconds.
    pub next_run: Option<i64>,
    pub last_run: Option<JobRun>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error("no job {name:?}; the jobs are {known}")]
    UnknownJob { name: String, known: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The cluster's state and the jobs' controls.
#[derive(Debug, Clone)]
pub struct Cluster {
    lease: Arc<dyn LeaseStore>,
    ledger: Arc<dyn RunLedger>,
    leadership: Leadership,
    settings: RuntimeSettings,
    blocklists: Blocklists,
    clock: Arc<dyn Clock>,
}

impl Cluster {
    pub fn new(
        lease: Arc<dyn LeaseStore>,
        ledger: Arc<dyn RunLedger>,
        leadership: Leadership,
        settings: RuntimeSettings,
        blocklists: Blocklists,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { lease, ledger, leadership, settings, blocklists, clock }
    }

    pub async fn leader(&self) -> Result<LeaderInfo, ClusterError> {
        let lease = self.lease.lease(SCHEDULER_LEASE).await?;
        Ok(LeaderInfo {
            lease,
            replica_id: self.leadership.replica().to_owned(),
            this_replica_leads: self.leadership.is_leading(),
        })
    }

    /// Every job: the fixed ones in [`JobKind::ALL`]'s order, then one
    /// import per enabled blocklist source.
    pub async fn jobs(&self) -> Result<Vec<JobInfo>, ClusterError> {
        let jobs = planned(&self.settings, &self.blocklists).await?;
        let mut last: HashMap<String, JobRun> =
            self.ledger.last_runs().await?.into_iter().map(|run| (run.job.clone(), run)).collect();
        let now = self.clock.now();
        Ok(jobs
            .into_iter()
            .map(|(kind, schedule)| {
                let name = kind.name();
                JobInfo { next_run: next_run(&schedule, now), schedule, last_run: last.remove(&name), name }
            })
            .collect())
    }

    /// Asks for a run of `name` now; returns the request's id.
    pub async fn run_now(&self, name: &str) -> Result<i64, ClusterError> {
        if name.is_empty() {
            return Err(InvalidArgument::new("job", "a job name is required").into());
        }
        let unknown = || {
            let mut known: Vec<&str> = JobKind::ALL.iter().map(|k| k.family()).collect();
            known.push("blocklist_import:<source id>");
            ClusterError::UnknownJob { name: name.to_owned(), known: known.join(", ") }
        };
        let kind = JobKind::parse(name).ok_or_else(unknown)?;
        if let JobKind::BlocklistImport(id) = kind
            && !self.blocklists.exists(id).await?
        {
            return Err(unknown());
        }
        let request_id = self.ledger.request_run(&kind.name(), self.leadership.replica()).await?;
        tracing::info!(job = %kind, request_id, "run requested");
        Ok(request_id)
    }
}
