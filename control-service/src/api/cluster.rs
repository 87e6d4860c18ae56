//! `bangui.control.v1.ClusterService`.

use std::{collections::HashMap, sync::Arc};

use bangui_proto::{
    control::v1::{
        self as pb, GetLeaderRequest, GetLeaderResponse, ListJobsRequest, ListJobsResponse, RunJobNowRequest,
        RunJobNowResponse, cluster_service_server::ClusterService,
    },
    prost_types::Timestamp,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{invalid, store_unavailable};
use crate::{
    clock::Clock,
    fail2ban::InvalidArgument,
    jobs::{JobKind, next_run},
    leader::{Leadership, SCHEDULER_LEASE},
    settings::RuntimeSettings,
    store::{LeaseStore, RunLedger, lease::JobRun},
};

/// The ClusterService handlers.
#[derive(Debug, Clone)]
pub struct ClusterApi {
    lease: Arc<dyn LeaseStore>,
    ledger: Arc<dyn RunLedger>,
    leadership: Leadership,
    settings: RuntimeSettings,
    clock: Arc<dyn Clock>,
}

impl ClusterApi {
    pub fn new(
        lease: Arc<dyn LeaseStore>,
        ledger: Arc<dyn RunLedger>,
        leadership: Leadership,
        settings: RuntimeSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { lease, ledger, leadership, settings, clock }
    }
}

fn millis(ms: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds: ms.div_euclid(1000), nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0) })
}

impl From<JobRun> for pb::JobRun {
    fn from(run: JobRun) -> Self {
        pb::JobRun {
            scheduled_for: millis(run.scheduled_for),
            started_at: millis(run.started_at),
            finished_at: run.finished_at.and_then(millis),
            status: run.status,
            error: run.error.unwrap_or_default(),
            replica: run.replica,
            term: run.term,
            trigger: run.trigger,
        }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    #[instrument(skip_all, fields(rpc = "GetLeader"))]
    async fn get_leader(&self, _request: Request<GetLeaderRequest>) -> Result<Response<GetLeaderResponse>, Status> {
        let lease = self.lease.lease(SCHEDULER_LEASE).await.map_err(|e| store_unavailable(&e))?;
        let replica_id = self.leadership.replica().to_owned();
        let this_replica_leads = self.leadership.is_leading();
        Ok(Response::new(match lease {
            Some(lease) => GetLeaderResponse {
                expired: lease.expires_at <= lease.db_now,
                holder: lease.holder,
                term: lease.term,
                acquired_at: millis(lease.acquired_at),
                expires_at: millis(lease.expires_at),
                this_replica_leads,
                replica_id,
            },
            None => GetLeaderResponse { expired: true, this_replica_leads, replica_id, ..Default::default() },
        }))
    }

    #[instrument(skip_all, fields(rpc = "ListJobs"))]
    async fn list_jobs(&self, _request: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        let schedules = self.settings.get().await.map_err(|e| store_unavailable(&e))?.schedules;
        let mut last: HashMap<String, JobRun> = self
            .ledger
            .last_runs()
            .await
            .map_err(|e| store_unavailable(&e))?
            .into_iter()
            .map(|run| (run.job.clone(), run))
            .collect();
        let now = self.clock.now();
        let jobs = JobKind::ALL
            .into_iter()
            .map(|kind| {
                let schedule = kind.schedule(&schedules).to_owned();
                pb::Job {
                    name: kind.name().to_owned(),
                    next_run: next_run(&schedule, now).map(|s| Timestamp { seconds: s, nanos: 0 }),
                    schedule,
                    last_run: last.remove(kind.name()).map(Into::into),
                }
            })
            .collect();
        Ok(Response::new(ListJobsResponse { jobs }))
    }

    #[instrument(skip_all, fields(rpc = "RunJobNow", job = %request.get_ref().job))]
    async fn run_job_now(&self, request: Request<RunJobNowRequest>) -> Result<Response<RunJobNowResponse>, Status> {
        let name = request.into_inner().job;
        if name.is_empty() {
            return Err(invalid(InvalidArgument::new("job", "a job name is required")));
        }
        let Some(kind) = JobKind::parse(&name) else {
            let known: Vec<&str> = JobKind::ALL.iter().map(|k| k.name()).collect();
            return Err(Status::not_found(format!("no job {name:?}; the jobs are {}", known.join(", "))));
        };
        let request_id =
            self.ledger.request_run(kind.name(), self.leadership.replica()).await.map_err(|e| store_unavailable(&e))?;
        tracing::info!(job = kind.name(), request_id, "run requested");
        Ok(Response::new(RunJobNowResponse { request_id }))
    }
}
