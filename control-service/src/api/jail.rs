//! `bangui.control.v1.JailService`.

use bangui_proto::control::v1::{
    self as pb, AddIgnoreIpRequest, AddIgnoreIpResponse, BanIpRequest, BanIpResponse, GetJailRequest, GetJailResponse,
    GetServerStatusRequest, GetServerStatusResponse, ListActiveBansRequest, ListActiveBansResponse, ListJailsRequest,
    ListJailsResponse, RemoveIgnoreIpRequest, RemoveIgnoreIpResponse, SetJailIdleRequest, SetJailIdleResponse,
    SetJailParamsRequest, SetJailParamsResponse, StartJailRequest, StartJailResponse, StopJailRequest,
    StopJailResponse, UnbanIpRequest, UnbanIpResponse, jail_service_server::JailService,
};
use bangui_proto::prost_types::Timestamp;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{fail2ban_status, invalid};
use crate::{error::InvalidArgument, geo_client::Country, jails::Jails};
use bangui_fail2ban::{
    ActiveBan, JailName, JailParams, JailStatus,
    validate::{parse_ignore_entry, parse_ip, parse_seconds},
};

/// The JailService handlers.
#[derive(Debug, Clone)]
pub struct JailApi {
    jails: Jails,
}

impl JailApi {
    pub fn new(jails: Jails) -> Self {
        Self { jails }
    }
}

fn jail_name(text: &str) -> Result<JailName, Status> {
    JailName::parse("jail", text).map_err(invalid)
}

fn timestamp(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

fn summary(status: JailStatus) -> pb::JailSummary {
    pb::JailSummary {
        name: status.name,
        enabled: true,
        idle: status.idle,
        currently_failed: status.currently_failed,
        total_failed: status.total_failed,
        currently_banned: status.currently_banned,
        total_banned: status.total_banned,
    }
}

fn ban(ban: ActiveBan, country: Option<Country>) -> pb::Ban {
    let (country_code, country_name) = country.map(|c| (c.code, c.name)).unwrap_or_default();
    pb::Ban {
        jail: ban.jail,
        ip: ban.ip,
        banned_at: Some(timestamp(ban.banned_at)),
        expires_at: ban.expires_at.map(timestamp),
        ban_seconds: ban.ban_seconds,
        country_code,
        country_name,
    }
}

/// The new values a SetJailParams request asks for, checked.
fn jail_params(request: &SetJailParamsRequest) -> Result<JailParams, InvalidArgument> {
    let params = JailParams {
        bantime: request.bantime_seconds.map(|v| parse_seconds("bantime_seconds", v, true)).transpose()?,
        findtime: request.findtime_seconds.map(|v| parse_seconds("findtime_seconds", v, false)).transpose()?,
        maxretry: request
            .maxretry
            .map(|v| {
                if (1..=10_000).contains(&v) {
                    Ok(v)
                } else {
                    Err(InvalidArgument::new("maxretry", "must be 1..=10000"))
                }
            })
            .transpose()?,
    };
    if params == JailParams::default() {
        return Err(InvalidArgument::new(
            "bantime_seconds",
            "nothing to change: set bantime_seconds, findtime_seconds and/or maxretry",
        ));
    }
    Ok(params)
}

#[tonic::async_trait]
impl JailService for JailApi {
    #[instrument(skip_all, fields(rpc = "GetServerStatus"))]
    async fn get_server_status(
        &self,
        _request: Request<GetServerStatusRequest>,
    ) -> Result<Response<GetServerStatusResponse>, Status> {
        let socket_path = self.jails.fail2ban().socket_path().display().to_string();
        let status = match self.jails.server_status().await {
            Ok(status) => status,
            Err(error) if error.is_unavailable() => {
                return Ok(Response::new(GetServerStatusResponse {
                    online: false,
                    unavailable_reason: error.to_string(),
                    socket_path,
                    ..Default::default()
                }));
            }
            Err(error) => return Err(fail2ban_status(error)),
        };
        let sum = |f: fn(&JailStatus) -> u64| status.jails.iter().map(f).sum();
        Ok(Response::new(GetServerStatusResponse {
            online: true,
            version: status.version.clone(),
            jail_count: u32::try_from(status.jails.len()).unwrap_or(u32::MAX),
            currently_failed: sum(|j| j.currently_failed),
            total_failed: sum(|j| j.total_failed),
            currently_banned: sum(|j| j.currently_banned),
            total_banned: sum(|j| j.total_banned),
            unavailable_reason: String::new(),
            socket_path,
        }))
    }

    #[instrument(skip_all, fields(rpc = "ListJails"))]
    async fn list_jails(&self, _request: Request<ListJailsRequest>) -> Result<Response<ListJailsResponse>, Status> {
        let jails = self.jails.list().await.map_err(fail2ban_status)?;
        Ok(Response::new(ListJailsResponse { jails: jails.into_iter().map(summary).collect() }))
    }

    #[instrument(skip_all, fields(rpc = "GetJail", jail = %request.get_ref().jail))]
    async fn get_jail(&self, request: Request<GetJailRequest>) -> Result<Response<GetJailResponse>, Status> {
        let jail = jail_name(&request.get_ref().jail)?;
        let detail = self.jails.detail(&jail).await.map_err(fail2ban_status)?;
        Ok(Response::new(GetJailResponse {
            log_paths: detail.status.log_paths.clone(),
            journal_matches: detail.status.journal_matches.clone(),
            summary: Some(summary(detail.status)),
            bans: detail.bans.into_iter().map(|b| ban(b, None)).collect(),
            bantime_seconds: detail.bantime,
            findtime_seconds: detail.findtime,
            maxretry: detail.maxretry,
            ignore_ips: detail.ignore_ips,
            actions: detail.actions,
        }))
    }

    #[instrument(skip_all, fields(rpc = "StartJail", jail = %request.get_ref().jail))]
    async fn start_jail(&self, request: Request<StartJailRequest>) -> Result<Response<StartJailResponse>, Status> {
        let jail = jail_name(&request.get_ref().jail)?;
        let (status, started) = self.jails.start(&jail).await.map_err(fail2ban_status)?;
        Ok(Response::new(StartJailResponse { summary: Some(summary(status)), started }))
    }

    #[instrument(skip_all, fields(rpc = "StopJail", jail = %request.get_ref().jail))]
    async fn stop_jail(&self, request: Request<StopJailRequest>) -> Result<Response<StopJailResponse>, Status> {
        let jail = jail_name(&request.get_ref().jail)?;
        self.jails.stop(&jail).await.map_err(fail2ban_status)?;
        Ok(Response::new(StopJailResponse {}))
    }

    #[instrument(skip_all, fields(rpc = "SetJailIdle", jail = %request.get_ref().jail))]
    async fn set_jail_idle(
        &self,
        request: Request<SetJailIdleRequest>,
    ) -> Result<Response<SetJailIdleResponse>, Status> {
        let jail = jail_name(&request.get_ref().jail)?;
        let idle = self.jails.set_idle(&jail, request.get_ref().idle).await.map_err(fail2ban_status)?;
        Ok(Response::new(SetJailIdleResponse { idle }))
    }

    #[instrument(skip_all, fields(rpc = "SetJailParams", jail = %request.get_ref().jail))]
    async fn set_jail_params(
        &self,
        request: Request<SetJailParamsRequest>,
    ) -> Result<Response<SetJailParamsResponse>, Status> {
        let jail = jail_name(&request.get_ref().jail)?;
        let params = jail_params(request.get_ref()).map_err(invalid)?;
        let (bantime_seconds, findtime_seconds, maxretry) =
            self.jails.set_params(&jail, params).await.map_err(fail2ban_status)?;
        Ok(Response::new(SetJailParamsResponse { bantime_seconds, findtime_seconds, maxretry }))
    }

    #[instrument(skip_all, fields(rpc = "AddIgnoreIp", jail = %request.get_ref().jail))]
    async fn add_ignore_ip(
        &self,
        request: Request<AddIgnoreIpRequest>,
    ) -> Result<Response<AddIgnoreIpResponse>, Status> {
        let jail = jail_name(&request.get_ref().jail)?;
        let entry = parse_ignore_entry("ip", &request.get_ref().ip).map_err(invalid)?;
        let ignore_ips = self.jails.add_ignore(&jail, &entry).await.map_err(fail2ban_status)?;
        Ok(Response::new(AddIgnoreIpResponse { ignore_ips }))
    }

    #[instrument(skip_all, fields(rpc = "RemoveIgnoreIp", jail = %request.get_ref().jail))]
    async fn remove_ignore_ip(
        &self,
        request: Request<RemoveIgnoreIpRequest>,
    ) -> Result<Response<RemoveIgnoreIpResponse>, Status> {
        let jail = jail_name(&request.get_ref().jail)?;
        let entry = parse_ignore_entry("ip", &request.get_ref().ip).map_err(invalid)?;
        let ignore_ips = self.jails.remove_ignore(&jail, &entry).await.map_err(fail2ban_status)?;
        Ok(Response::new(RemoveIgnoreIpResponse { ignore_ips }))
    }

    #[instrument(skip_all, fields(rpc = "BanIp", jail = %request.get_ref().jail))]
    async fn ban_ip(&self, request: Request<BanIpRequest>) -> Result<Response<BanIpResponse>, Status> {
        let jail = jail_name(&request.get_ref().jail)?;
        let ip = parse_ip("ip", &request.get_ref().ip).map_err(invalid)?;
        let newly_banned = self.jails.ban(&jail, ip).await.map_err(fail2ban_status)?;
        Ok(Response::new(BanIpResponse { newly_banned }))
    }

    #[instrument(skip_all, fields(rpc = "UnbanIp"))]
    async fn unban_ip(&self, request: Request<UnbanIpRequest>) -> Result<Response<UnbanIpResponse>, Status> {
        let ip = parse_ip("ip", &request.get_ref().ip).map_err(invalid)?;
        let jail = request.get_ref().jail.as_deref().map(jail_name).transpose()?;
        let unbanned = self.jails.unban(ip, jail.as_ref()).await.map_err(fail2ban_status)?;
        Ok(Response::new(UnbanIpResponse { unbanned }))
    }

    #[instrument(skip_all, fields(rpc = "ListActiveBans"))]
    async fn list_active_bans(
        &self,
        _request: Request<ListActiveBansRequest>,
    ) -> Result<Response<ListActiveBansResponse>, Status> {
        let located = self.jails.active_bans().await.map_err(fail2ban_status)?;
        Ok(Response::new(ListActiveBansResponse {
            bans: located.bans.into_iter().map(|(b, c)| ban(b, c)).collect(),
            geo_available: located.geo_available,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bangui_fail2ban::Fail2banError;

    #[test]
    fn params_need_something_valid_to_change() {
        let mut request = SetJailParamsRequest { jail: "sshd".into(), ..Default::default() };
        assert_eq!(jail_params(&request).unwrap_err().field, "bantime_seconds");
        request.maxretry = Some(0);
        assert_eq!(jail_params(&request).unwrap_err().field, "maxretry");
        request.maxretry = Some(5);
        request.findtime_seconds = Some(-1);
        assert_eq!(jail_params(&request).unwrap_err().field, "findtime_seconds");
        request.findtime_seconds = Some(600);
        request.bantime_seconds = Some(-1);
        assert_eq!(
            jail_params(&request).unwrap(),
            JailParams { bantime: Some(-1), findtime: Some(600), maxretry: Some(5) }
        );
    }

    #[test]
    fn errors_map_to_meaningful_codes() {
        let code = |e: Fail2banError| fail2ban_status(e).code();
        assert_eq!(
            code(Fail2banError::Unavailable { socket: "/x".into(), reason: "refused".into() }),
            tonic::Code::Unavailable
        );
        assert_eq!(code(Fail2banError::UnknownJail("x".into())), tonic::Code::NotFound);
        assert_eq!(code(Fail2banError::Invalid(InvalidArgument::new("ip", "bad"))), tonic::Code::InvalidArgument);
        assert_eq!(code(Fail2banError::Protocol("x".into())), tonic::Code::Internal);
        assert_eq!(
            code(Fail2banError::Rejected { class: "builtins.Exception".into(), message: "x".into() }),
            tonic::Code::FailedPrecondition
        );
    }
}
