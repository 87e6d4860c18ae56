//! `bangui.control.v1.ClusterService`.

use bangui_proto::{
    control::v1::{
        self as pb, GetLeaderRequest, GetLeaderResponse, ListJobsRequest, ListJobsResponse, RunJobNowRequest,
        RunJobNowResponse, cluster_service_server::ClusterService,
    },
    prost_types::Timestamp,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::cluster::{Cluster, JobInfo, JobRun, LeaderInfo};

/// The ClusterService handlers.
#[derive(Debug, Clone)]
pub struct ClusterApi {
    cluster: Cluster,
}

impl ClusterApi {
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
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

impl From<LeaderInfo> for GetLeaderResponse {
    fn from(info: LeaderInfo) -> Self {
        let LeaderInfo { lease, replica_id, this_replica_leads } = info;
        match lease {
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
        }
    }
}

impl From<JobInfo> for pb::Job {
    fn from(job: JobInfo) -> Self {
        pb::Job {
            name: job.name.to_owned(),
            next_run: job.next_run.map(|seconds| Timestamp { seconds, nanos: 0 }),
            schedule: job.schedule,
            last_run: job.last_run.map(Into::into),
        }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    #[instrument(skip_all, fields(rpc = "GetLeader"))]
    async fn get_leader(&self, _request: Request<GetLeaderRequest>) -> Result<Response<GetLeaderResponse>, Status> {
        let leader = self.cluster.leader().await?;
        Ok(Response::new(leader.into()))
    }

    #[instrument(skip_all, fields(rpc = "ListJobs"))]
    async fn list_jobs(&self, _request: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        let jobs = self.cluster.jobs().await?;
        Ok(Response::new(ListJobsResponse { jobs: jobs.into_iter().map(Into::into).collect() }))
    }

    #[instrument(skip_all, fields(rpc = "RunJobNow", job = %request.get_ref().job))]
    async fn run_job_now(&self, request: Request<RunJobNowRequest>) -> Result<Response<RunJobNowResponse>, Status> {
        let request_id = self.cluster.run_now(&request.into_inner().job).await?;
        Ok(Response::new(RunJobNowResponse { request_id }))
    }
}
