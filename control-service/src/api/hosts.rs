//! `bangui.control.v1.HostService`: the fleet's hosts, behind the session
//! gate.

use std::time::Duration;

use bangui_proto::{
    control::v1::{
        self as pb, CreateEnrollmentTokenRequest, CreateEnrollmentTokenResponse, GetHostRequest, GetHostResponse,
        ListHostsRequest, ListHostsResponse, RenameHostRequest, RenameHostResponse, RevokeHostRequest,
        RevokeHostResponse, host_service_server::HostService,
    },
    prost_types::Timestamp,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::hosts::{Host, HostId, HostName, Hosts};

/// The HostService handlers.
#[derive(Debug, Clone)]
pub struct HostApi {
    hosts: Hosts,
}

impl HostApi {
    pub fn new(hosts: Hosts) -> Self {
        Self { hosts }
    }
}

pub(crate) fn millis(ms: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds: ms.div_euclid(1000), nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0) })
}

impl From<Host> for pb::Host {
    fn from(host: Host) -> Self {
        pb::Host {
            active_bans: host.active_bans(),
            states_read_at: host.states_at.and_then(millis),
            outbox_backlog: host.outbox_backlog,
            id: host.id,
            name: host.name,
            connected: host.replica.is_some(),
            replica: host.replica.unwrap_or_default(),
            enrolled_at: millis(host.enrolled_at),
            last_seen: host.last_seen.and_then(millis),
            agent_version: host.agent_version,
            fail2ban_version: host.fail2ban_version,
            jails: host.jails,
            revoked: host.revoked_at.is_some(),
            revoked_at: host.revoked_at.and_then(millis),
        }
    }
}

fn id(text: &str) -> Result<HostId, Status> {
    HostId::parse("id", text).map_err(super::invalid)
}

#[tonic::async_trait]
impl HostService for HostApi {
    #[instrument(skip_all, fields(ttl_seconds = request.get_ref().ttl_seconds))]
    async fn create_enrollment_token(
        &self,
        request: Request<CreateEnrollmentTokenRequest>,
    ) -> Result<Response<CreateEnrollmentTokenResponse>, Status> {
        let request = request.into_inner();
        let ttl = Duration::from_secs(u64::from(request.ttl_seconds));
        let token = self.hosts.create_enrollment_token(ttl, &request.note).await?;
        Ok(Response::new(CreateEnrollmentTokenResponse { token: token.token, expires_at: millis(token.expires_at) }))
    }

    #[instrument(skip_all)]
    async fn list_hosts(&self, _request: Request<ListHostsRequest>) -> Result<Response<ListHostsResponse>, Status> {
        let hosts = self.hosts.list().await?;
        Ok(Response::new(ListHostsResponse { hosts: hosts.into_iter().map(Into::into).collect() }))
    }

    #[instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn get_host(&self, request: Request<GetHostRequest>) -> Result<Response<GetHostResponse>, Status> {
        let host = self.hosts.get(&id(&request.get_ref().id)?).await?;
        Ok(Response::new(GetHostResponse { host: Some(host.into()) }))
    }

    #[instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn rename_host(&self, request: Request<RenameHostRequest>) -> Result<Response<RenameHostResponse>, Status> {
        let request = request.into_inner();
        let id = id(&request.id)?;
        let name = HostName::parse("name", &request.name).map_err(super::invalid)?;
        let host = self.hosts.rename(&id, &name).await?;
        Ok(Response::new(RenameHostResponse { host: Some(host.into()) }))
    }

    #[instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn revoke_host(&self, request: Request<RevokeHostRequest>) -> Result<Response<RevokeHostResponse>, Status> {
        let host = self.hosts.revoke(&id(&request.get_ref().id)?).await?;
        Ok(Response::new(RevokeHostResponse { host: Some(host.into()) }))
    }
}
