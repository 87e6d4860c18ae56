//! `bangui.control.v1.JailService`.

use bangui_proto::control::v1::{
    self as pb, AddIgnoreIpRequest, AddIgnoreIpResponse, BanIpRequest, BanIpResponse, GetJailRequest, GetJailResponse,
    GetServerStatusRequest, GetServerStatusResponse, ListActiveBansRequest, ListActiveBansResponse, ListJailsRequest,
    ListJailsResponse, RemoveIgnoreIpRequest, RemoveIgnoreIpResponse, SetJailIdleRequest, SetJailIdleResponse,
    SetJailParamsRequest, SetJailParamsResponse, StartJailRequest, StartJailResponse, StopJailRequest,
    StopJailResponse, UnbanIpRequest, UnbanIpResponse, jail_service_server::JailService,
};
use bangui_proto::prost_types::Timestamp;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tracing::instrument;

use super::{fail2ban_status, invalid};
use crate::{
    error::InvalidArgument,
    fleet::{self, AddressError, Addressed, DEFAULT_DEADLINE, START_DEADLINE, Target},
    geo_client::Country,
    hosts::Host,
    jails::Jails,
};
use bangui_fail2ban::{
    ActiveBan, Fail2banError, JailName, JailParams, JailStatus, ServerStatus,
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

fn ban(ban: ActiveBan, country: Option<Country>, host: &Target) -> pb::Ban {
    let (country_code, country_name) = country.map(|c| (c.code, c.name)).unwrap_or_default();
    pb::Ban {
        host: host.name.clone(),
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

/// The caller's deadline (its `grpc-timeout`, a moment early so the answer
/// reaches it in time), else `default`.
fn deadline<T>(request: &Request<T>, default: Duration) -> Instant {
    let asked = request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(grpc_timeout);
    let budget = match asked {
        Some(asked) => asked.saturating_sub((asked / 10).min(Duration::from_millis(200))),
        None => default,
    };
    Instant::now() + budget
}

/// A `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

fn address_status(error: AddressError) -> Status {
    match error {
        AddressError::Invalid(e) => invalid(e),
        e @ AddressError::NotFound(_) => Status::not_found(e.to_string()),
        AddressError::Hosts(e) => e.into(),
    }
}

/// A host's part of the answer.
fn outcome<T>(target: &Target, result: &Result<T, Fail2banError>) -> pb::HostOutcome {
    let (code, message) = match result {
        Ok(_) => (0, String::new()),
        Err(error) => {
            let status = fail2ban_status(clone_error(error));
            (status.code() as i32, status.message().to_owned())
        }
    };
    pb::HostOutcome { host_id: target.id.clone(), host_name: target.name.clone(), code, message, as_of: None }
}

/// The parts of an error its status is made of.
fn clone_error(error: &Fail2banError) -> Fail2banError {
    bangui_fail2ban::command::Failure::from(error).into()
}

/// One host's answer, or every host's.
enum Answer<T> {
    One(Target, T),
    Every(Vec<(Target, Result<T, Fail2banError>)>),
}

impl<T> Answer<T> {
    /// The per-host outcomes, made with `part`.
    fn parts<P>(&self, part: impl Fn(pb::HostOutcome, Option<&T>) -> P) -> Vec<P> {
        match self {
            Answer::One(target, value) => vec![part(outcome::<()>(target, &Ok(())), Some(value))],
            Answer::Every(all) => all.iter().map(|(t, r)| part(outcome(t, r), r.as_ref().ok())).collect(),
        }
    }

    fn one(&self) -> Option<&T> {
        match self {
            Answer::One(_, value) => Some(value),
            Answer::Every(_) => None,
        }
    }
}

/// One host's part of a read answered from what agents push.
struct PushedPart {
    outcome: pb::HostOutcome,
    /// What it says (the last push when its agent is away); `None` when
    /// nothing can be said.
    status: Option<ServerStatus>,
}

/// A host's status as its agent last pushed it.
fn pushed_status(host: &Host) -> ServerStatus {
    let jails = host
        .jail_states
        .iter()
        .map(|s| JailStatus {
            name: s.name.clone(),
            currently_failed: s.currently_failed,
            total_failed: s.total_failed,
            currently_banned: s.currently_banned,
            total_banned: s.total_banned,
            ..JailStatus::default()
        })
        .collect();
    ServerStatus { version: host.fail2ban_version.clone(), jails }
}

impl JailApi {
    /// A read over every host (no `host`, several hosts, not `fresh`),
    /// answered from what each agent last pushed: one database read, not a
    /// round trip per host. The host `local`, and an agent that pushes no
    /// counters (an older version), are asked, within `until`. `None`:
    /// the request is not such a read.
    async fn answer_from_pushed(
        &self,
        host: &str,
        fresh: bool,
        until: Instant,
    ) -> Result<Option<Vec<PushedPart>>, Status> {
        if fresh || !host.is_empty() {
            return Ok(None);
        }
        let every = self.jails.fleet().pushed().await.map_err(address_status)?;
        if every.len() <= 1 {
            return Ok(None);
        }
        let (known, ask): (Vec<_>, Vec<_>) = every
            .into_iter()
            .partition(|(_, host)| host.as_ref().is_some_and(|h| h.replica.is_none() || h.states_at.is_some()));
        let asked = fleet::each(ask.into_iter().map(|(t, _)| t).collect(), until, |t| async move {
            self.jails.server_status(&t, until).await
        })
        .await;
        let mut parts: Vec<PushedPart> = asked
            .into_iter()
            .map(|(target, status)| PushedPart { outcome: outcome(&target, &status), status: status.ok() })
            .collect();
        for (target, host) in known {
            let Some(host) = host else { continue };
            let mut part = pb::HostOutcome {
                host_id: target.id.clone(),
                host_name: target.name.clone(),
                as_of: host.states_at.and_then(super::hosts::millis),
                ..Default::default()
            };
            if host.replica.is_none() {
                part.code = Code::Unavailable as i32;
                part.message = format!("host {} is unreachable: its agent is not connected", target.name);
            }
            let status = host.states_at.map(|_| pushed_status(&host));
            parts.push(PushedPart { outcome: part, status });
        }
        // As `Fleet::targets` orders them: `local` first, then by name.
        parts.sort_by(|a, b| {
            let key = |p: &PushedPart| (p.outcome.host_id != fleet::LOCAL, p.outcome.host_name.clone());
            key(a).cmp(&key(b))
        });
        Ok(Some(parts))
    }

    /// Runs `op` on the hosts the request is for. One host: its failure is
    /// the call's status, as before the fleet. Several: each its outcome.
    async fn on_hosts<T, F, Fut>(
        &self,
        host: &str,
        all_hosts: bool,
        write: bool,
        deadline: Instant,
        op: F,
    ) -> Result<Answer<T>, Status>
    where
        F: Fn(Target) -> Fut,
        Fut: std::future::Future<Output = Result<T, Fail2banError>>,
    {
        match self.jails.fleet().address(host, all_hosts, write).await.map_err(address_status)? {
            Addressed::One(target) => {
                let value = op(target.clone()).await.map_err(fail2ban_status)?;
                Ok(Answer::One(target, value))
            }
            Addressed::Every(targets) => Ok(Answer::Every(fleet::each(targets, deadline, op).await)),
        }
    }
}

fn status_of(
    target: &Target,
    socket_path: &str,
    result: Result<ServerStatus, Fail2banError>,
) -> GetServerStatusResponse {
    let socket_path = if target.is_local() { socket_path.to_owned() } else { String::new() };
    let status = match result {
        Ok(status) => status,
        Err(error) => {
            return GetServerStatusResponse {
                online: false,
                unavailable_reason: error.to_string(),
                socket_path,
                ..Default::default()
            };
        }
    };
    let sum = |f: fn(&JailStatus) -> u64| status.jails.iter().map(f).sum();
    GetServerStatusResponse {
        online: true,
        version: status.version.clone(),
        jail_count: u32::try_from(status.jails.len()).unwrap_or(u32::MAX),
        currently_failed: sum(|j| j.currently_failed),
        total_failed: sum(|j| j.total_failed),
        currently_banned: sum(|j| j.currently_banned),
        total_banned: sum(|j| j.total_banned),
        unavailable_reason: String::new(),
        socket_path,
        hosts: Vec::new(),
    }
}

#[tonic::async_trait]
impl JailService for JailApi {
    #[instrument(skip_all, fields(rpc = "GetServerStatus", host = %request.get_ref().host))]
    async fn get_server_status(
        &self,
        request: Request<GetServerStatusRequest>,
    ) -> Result<Response<GetServerStatusResponse>, Status> {
        let until = deadline(&request, DEFAULT_DEADLINE);
        let socket_path = self.jails.fail2ban().socket_path().display().to_string();
        let GetServerStatusRequest { host, fresh } = request.get_ref();
        if let Some(parts) = self.answer_from_pushed(host, *fresh, until).await? {
            let hosts = parts
                .into_iter()
                .map(|part| {
                    let status = part.status.ok_or_else(|| Fail2banError::Remote {
                        kind: "unavailable",
                        message: part.outcome.message.clone(),
                    });
                    let target = Target { id: part.outcome.host_id.clone(), name: part.outcome.host_name.clone() };
                    let mut response = status_of(&target, &socket_path, status);
                    // A host whose agent is away says what it last pushed, as offline.
                    response.online &= part.outcome.code == 0;
                    pb::HostServerStatus { outcome: Some(part.outcome), status: Some(response) }
                })
                .collect();
            return Ok(Response::new(GetServerStatusResponse { hosts, ..Default::default() }));
        }
        let addressed =
            self.jails.fleet().address(&request.get_ref().host, false, false).await.map_err(address_status)?;
        let targets = match addressed {
            Addressed::One(target) => vec![target],
            Addressed::Every(targets) => targets,
        };
        let single = targets.len() == 1;
        // fail2ban being down is an answer here (`online: false`), not an error.
        let statuses =
            fleet::each(targets, until, |t| async move { Ok(self.jails.server_status(&t, until).await) }).await;
        let mut hosts: Vec<pb::HostServerStatus> = Vec::with_capacity(statuses.len());
        for (target, status) in statuses {
            let status = status.unwrap_or_else(Err);
            let outcome = outcome(&target, &status);
            match status {
                Err(error) if single && !error.is_unavailable() => return Err(fail2ban_status(error)),
                status => {
                    let response = status_of(&target, &socket_path, status);
                    hosts.push(pb::HostServerStatus { outcome: Some(outcome), status: Some(response) });
                }
            }
        }
        let mut response = match (single, hosts.first()) {
            (true, Some(only)) => only.status.clone().unwrap_or_default(),
            _ => GetServerStatusResponse::default(),
        };
        response.hosts = hosts;
        Ok(Response::new(response))
    }

    #[instrument(skip_all, fields(rpc = "ListJails", host = %request.get_ref().host))]
    async fn list_jails(&self, request: Request<ListJailsRequest>) -> Result<Response<ListJailsResponse>, Status> {
        let until = deadline(&request, DEFAULT_DEADLINE);
        let ListJailsRequest { host, fresh } = request.get_ref();
        if let Some(parts) = self.answer_from_pushed(host, *fresh, until).await? {
            let hosts = parts
                .into_iter()
                .map(|part| pb::HostJails {
                    jails: part.status.map(|s| s.jails.into_iter().map(summary).collect()).unwrap_or_default(),
                    outcome: Some(part.outcome),
                })
                .collect();
            return Ok(Response::new(ListJailsResponse { jails: Vec::new(), hosts }));
        }
        let answer =
            self.on_hosts(host, false, false, until, |t| async move {
                Ok(self.jails.server_status(&t, until).await?.jails)
            })
            .await?;
        let hosts = answer.parts(|outcome, jails| pb::HostJails {
            outcome: Some(outcome),
            jails: jails.into_iter().flatten().cloned().map(summary).collect(),
        });
        let jails = answer.one().into_iter().flatten().cloned().map(summary).collect();
        Ok(Response::new(ListJailsResponse { jails, hosts }))
    }

    #[instrument(skip_all, fields(rpc = "GetJail", jail = %request.get_ref().jail, host = %request.get_ref().host))]
    async fn get_jail(&self, request: Request<GetJailRequest>) -> Result<Response<GetJailResponse>, Status> {
        let until = deadline(&request, DEFAULT_DEADLINE);
        let jail = jail_name(&request.get_ref().jail)?;
        // One jail's detail is one host's: a host is needed when there are several.
        let answer = self
            .on_hosts(&request.get_ref().host, false, true, until, |t| {
                let jail = jail.clone();
                async move { self.jails.detail(&t, &jail, until).await }
            })
            .await?;
        let hosts = answer.parts(|outcome, _| outcome);
        let Answer::One(target, detail) = answer else { return Err(Status::internal("one host was addressed")) };
        Ok(Response::new(GetJailResponse {
            log_paths: detail.status.log_paths.clone(),
            journal_matches: detail.status.journal_matches.clone(),
            summary: Some(summary(detail.status)),
            bans: detail.bans.into_iter().map(|b| ban(b, None, &target)).collect(),
            bantime_seconds: detail.bantime,
            findtime_seconds: detail.findtime,
            maxretry: detail.maxretry,
            ignore_ips: detail.ignore_ips,
            actions: detail.actions,
            hosts,
        }))
    }

    #[instrument(skip_all, fields(rpc = "StartJail", jail = %request.get_ref().jail, host = %request.get_ref().host))]
    async fn start_jail(&self, request: Request<StartJailRequest>) -> Result<Response<StartJailResponse>, Status> {
        let until = deadline(&request, START_DEADLINE);
        let jail = jail_name(&request.get_ref().jail)?;
        let StartJailRequest { host, all_hosts, .. } = request.get_ref();
        let answer = self
            .on_hosts(host, *all_hosts, true, until, |t| {
                let jail = jail.clone();
                async move { self.jails.start(&t, &jail, until).await }
            })
            .await?;
        let hosts = answer.parts(|outcome, _| outcome);
        let (summary, started) = match answer.one() {
            Some((status, started)) => (Some(summary(status.clone())), *started),
            None => (None, false),
        };
        Ok(Response::new(StartJailResponse { summary, started, hosts }))
    }

    #[instrument(skip_all, fields(rpc = "StopJail", jail = %request.get_ref().jail, host = %request.get_ref().host))]
    async fn stop_jail(&self, request: Request<StopJailRequest>) -> Result<Response<StopJailResponse>, Status> {
        let until = deadline(&request, DEFAULT_DEADLINE);
        let jail = jail_name(&request.get_ref().jail)?;
        let StopJailRequest { host, all_hosts, .. } = request.get_ref();
        let answer = self
            .on_hosts(host, *all_hosts, true, until, |t| {
                let jail = jail.clone();
                async move { self.jails.stop(&t, &jail, until).await }
            })
            .await?;
        Ok(Response::new(StopJailResponse { hosts: answer.parts(|outcome, _| outcome) }))
    }

    #[instrument(skip_all, fields(rpc = "SetJailIdle", jail = %request.get_ref().jail, host = %request.get_ref().host))]
    async fn set_jail_idle(
        &self,
        request: Request<SetJailIdleRequest>,
    ) -> Result<Response<SetJailIdleResponse>, Status> {
        let until = deadline(&request, DEFAULT_DEADLINE);
        let jail = jail_name(&request.get_ref().jail)?;
        let SetJailIdleRequest { host, all_hosts, idle, .. } = request.get_ref();
        let answer = self
            .on_hosts(host, *all_hosts, true, until, |t| {
                let jail = jail.clone();
                async move { self.jails.set_idle(&t, &jail, *idle, until).await }
            })
            .await?;
        let hosts = answer.parts(|outcome, _| outcome);
        Ok(Response::new(SetJailIdleResponse { idle: answer.one().copied().unwrap_or(*idle), hosts }))
    }

    #[instrument(skip_all, fields(rpc = "SetJailParams", jail = %request.get_ref().jail, host = %request.get_ref().host))]
    async fn set_jail_params(
        &self,
        request: Request<SetJailParamsRequest>,
    ) -> Result<Response<SetJailParamsResponse>, Status> {
        let until = deadline(&request, DEFAULT_DEADLINE);
        let jail = jail_name(&request.get_ref().jail)?;
        let params = jail_params(request.get_ref()).map_err(invalid)?;
        let SetJailParamsRequest { host, all_hosts, .. } = request.get_ref();
        let answer = self
            .on_hosts(host, *all_hosts, true, until, |t| {
                let jail = jail.clone();
                async move { self.jails.set_params(&t, &jail, params, until).await }
            })
            .await?;
        let hosts = answer.parts(|outcome, _| outcome);
        let (bantime_seconds, findtime_seconds, maxretry) = answer.one().copied().unwrap_or_default();
        Ok(Response::new(SetJailParamsResponse { bantime_seconds, findtime_seconds, maxretry, hosts }))
    }

    #[instrument(skip_all, fields(rpc = "AddIgnoreIp", jail = %request.get_ref().jail, host = %request.get_ref().host))]
    async fn add_ignore_ip(
        &self,
        request: Request<AddIgnoreIpRequest>,
    ) -> Result<Response<AddIgnoreIpResponse>, Status> {
        let AddIgnoreIpRequest { jail, ip, host, all_hosts } = request.get_ref();
        let (ignore_ips, hosts) = self.change_ignore(&request, jail, ip, host, *all_hosts, true).await?;
        Ok(Response::new(AddIgnoreIpResponse { ignore_ips, hosts }))
    }

    #[instrument(skip_all, fields(rpc = "RemoveIgnoreIp", jail = %request.get_ref().jail, host = %request.get_ref().host))]
    async fn remove_ignore_ip(
        &self,
        request: Request<RemoveIgnoreIpRequest>,
    ) -> Result<Response<RemoveIgnoreIpResponse>, Status> {
        let RemoveIgnoreIpRequest { jail, ip, host, all_hosts } = request.get_ref();
        let (ignore_ips, hosts) = self.change_ignore(&request, jail, ip, host, *all_hosts, false).await?;
        Ok(Response::new(RemoveIgnoreIpResponse { ignore_ips, hosts }))
    }

    #[instrument(skip_all, fields(rpc = "BanIp", jail = %request.get_ref().jail, host = %request.get_ref().host))]
    async fn ban_ip(&self, request: Request<BanIpRequest>) -> Result<Response<BanIpResponse>, Status> {
        let until = deadline(&request, DEFAULT_DEADLINE);
        let jail = jail_name(&request.get_ref().jail)?;
        let ip = parse_ip("ip", &request.get_ref().ip).map_err(invalid)?;
        let BanIpRequest { host, all_hosts, .. } = request.get_ref();
        let answer = self
            .on_hosts(host, *all_hosts, true, until, |t| {
                let jail = jail.clone();
                async move { self.jails.ban(&t, &jail, ip, until).await }
            })
            .await?;
        let hosts = answer.parts(|outcome, newly| pb::HostBan {
            outcome: Some(outcome),
            newly_banned: newly.copied().unwrap_or(false),
        });
        Ok(Response::new(BanIpResponse { newly_banned: answer.one().copied().unwrap_or(false), hosts }))
    }

    #[instrument(skip_all, fields(rpc = "UnbanIp", host = %request.get_ref().host))]
    async fn unban_ip(&self, request: Request<UnbanIpRequest>) -> Result<Response<UnbanIpResponse>, Status> {
        let until = deadline(&request, DEFAULT_DEADLINE);
        let ip = parse_ip("ip", &request.get_ref().ip).map_err(invalid)?;
        let jail = request.get_ref().jail.as_deref().map(jail_name).transpose()?;
        let UnbanIpRequest { host, all_hosts, .. } = request.get_ref();
        let answer = self
            .on_hosts(host, *all_hosts, true, until, |t| {
                let jail = jail.clone();
                async move { self.jails.unban(&t, ip, jail.as_ref(), until).await }
            })
            .await?;
        let hosts =
            answer.parts(|outcome, n| pb::HostUnban { outcome: Some(outcome), unbanned: n.copied().unwrap_or(0) });
        Ok(Response::new(UnbanIpResponse { unbanned: answer.one().copied().unwrap_or(0), hosts }))
    }

    #[instrument(skip_all, fields(rpc = "ListActiveBans", host = %request.get_ref().host))]
    async fn list_active_bans(
        &self,
        request: Request<ListActiveBansRequest>,
    ) -> Result<Response<ListActiveBansResponse>, Status> {
        let until = deadline(&request, DEFAULT_DEADLINE);
        let answer = self
            .on_hosts(&request.get_ref().host, false, false, until, |t| async move {
                let bans = self.jails.active_bans(&t, until).await?;
                Ok(bans.into_iter().map(|b| (t.clone(), b)).collect::<Vec<_>>())
            })
            .await?;
        let hosts = answer.parts(|outcome, _| outcome);
        let all: Vec<(Target, ActiveBan)> = match answer {
            Answer::One(_, bans) => bans,
            Answer::Every(every) => every.into_iter().filter_map(|(_, r)| r.ok()).flatten().collect(),
        };
        let (targets, bans): (Vec<Target>, Vec<ActiveBan>) = all.into_iter().unzip();
        let located = self.jails.locate(bans).await;
        Ok(Response::new(ListActiveBansResponse {
            bans: located.bans.into_iter().zip(&targets).map(|((b, c), t)| ban(b, c, t)).collect(),
            geo_available: located.geo_available,
            hosts,
        }))
    }
}

impl JailApi {
    async fn change_ignore<T>(
        &self,
        request: &Request<T>,
        jail: &str,
        ip: &str,
        host: &str,
        all_hosts: bool,
        add: bool,
    ) -> Result<(Vec<String>, Vec<pb::HostOutcome>), Status> {
        let until = deadline(request, DEFAULT_DEADLINE);
        let jail = jail_name(jail)?;
        let entry = parse_ignore_entry("ip", ip).map_err(invalid)?;
        let answer = self
            .on_hosts(host, all_hosts, true, until, |t| {
                let (jail, entry) = (jail.clone(), entry.clone());
                async move { self.jails.change_ignore(&t, &jail, &entry, add, until).await }
            })
            .await?;
        let hosts = answer.parts(|outcome, _| outcome);
        Ok((answer.one().cloned().unwrap_or_default(), hosts))
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
