//! Jail operations addressed to a host (issue 21, items 4 and 6): the real
//! control-service sends them down the stream of a real `fail2ban-agent`,
//! which runs them against its own real fail2ban-server. A host is named
//! by name or id; with several hosts an empty host is a fan-out read or a
//! refused write; a stopped agent makes its host UNAVAILABLE by the call's
//! deadline, and what it was sent is never applied late; a call to a
//! replica that does not hold the host's stream reaches it through
//! PostgreSQL (a command row and NOTIFY).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bangui_e2e::{ControlService, PgSchema, agent::AgentProcess, fail2ban::Fail2banServer};
use bangui_proto::control::v1::{
    self as pb, history_service_client::HistoryServiceClient, host_service_client::HostServiceClient,
};
use tonic::Code;

/// `control` with one agent, `name`, beside `f2b`; the control-service's
/// own socket (the host `local`) is a path where nothing listens.
async fn enrolled(control: &ControlService, f2b: &Fail2banServer, dir: &Path, name: &str) -> AgentProcess {
    let mut hosts = HostServiceClient::new(control.authed().await);
    let token = hosts
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest { ttl_seconds: 600, note: name.into() })
        .await
        .unwrap()
        .into_inner()
        .token;
    let token_path = dir.join(format!("{name}.token"));
    std::fs::write(&token_path, token).unwrap();
    let endpoint = format!("http://{}", control.agent_addr().unwrap());
    let agent = AgentProcess::start(
        &endpoint,
        &dir.join(name),
        &f2b.socket(),
        &["--enroll-token-file", token_path.to_str().unwrap(), "--host-name", name, "--history-interval", "300ms"],
    );
    agent.wait_attached(1).await;
    agent
}

fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

fn outcome_of<'a>(hosts: &'a [pb::HostOutcome], name: &str) -> &'a pb::HostOutcome {
    hosts.iter().find(|h| h.host_name == name).unwrap_or_else(|| panic!("no {name} in {hosts:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_jail_operation_reaches_the_host_it_names() {
    let f2b = Fail2banServer::start();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", dir.path().join("none.sock").to_str().unwrap()]);
    let _agent = enrolled(&control, &f2b, dir.path(), "web-1").await;
    let mut jails = control.jails().await;
    let host = |name: &str| name.to_owned();

    // Two hosts (local and web-1): a write must name one.
    let ban = pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.41".into(), ..Default::default() };
    let refused = jails.ban_ip(ban.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("host"), "{refused:?}");
    assert!(f2b.banned("alpha").is_empty());

    // Named: it reaches web-1's fail2ban, and only it.
    let banned = jails.ban_ip(pb::BanIpRequest { host: host("web-1"), ..ban.clone() }).await.unwrap().into_inner();
    assert!(banned.newly_banned);
    assert_eq!(banned.hosts.len(), 1);
    assert_eq!(f2b.banned("alpha"), vec!["192.0.2.41".to_owned()]);
    let again = jails.ban_ip(pb::BanIpRequest { host: host("web-1"), ..ban.clone() }).await.unwrap().into_inner();
    assert!(!again.newly_banned, "already banned there");

    // By id too; the jail as web-1's fail2ban has it.
    let listed = HostServiceClient::new(control.authed().await)
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let id = listed.iter().find(|h| h.name == "web-1").unwrap().id.clone();
    let detail =
        jails.get_jail(pb::GetJailRequest { jail: "alpha".into(), host: id.clone() }).await.unwrap().into_inner();
    assert_eq!(detail.bans.len(), 1);
    assert_eq!(detail.bans[0].ip, "192.0.2.41");
    assert_eq!(detail.bans[0].host, "web-1");

    // Archived once, with its host: recorded as the operator's at once, and
    // the same ban from web-1's outbox (fail2ban's own row) is not a second.
    let mut history = HistoryServiceClient::new(control.authed().await);
    let archived = |ip: &str| {
        let mut history = history.clone();
        let filter = pb::HistoryFilter {
            window: pb::Window::All as i32,
            host: id.clone(),
            ip_prefix: ip.into(),
            ..Default::default()
        };
        async move {
            history
                .list_bans(pb::ListBansRequest { filter: Some(filter), page_size: 100, ..Default::default() })
                .await
                .unwrap()
                .into_inner()
                .bans
        }
    };
    let first = archived("192.0.2.41").await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].origin.as_str(), first[0].host.as_str()), ("manual", id.as_str()));
    // A later ban made on web-1 itself arrives through the outbox, after
    // (in sequence) the operator's: then that one has been delivered too.
    f2b.client_ok(&["set", "alpha", "banip", "192.0.2.42"]);
    bangui_e2e::eventually(20, "web-1's own ban archived from its outbox", || async {
        archived("192.0.2.42").await.iter().any(|b| b.origin == "fail2ban")
    })
    .await;
    assert_eq!(archived("192.0.2.41").await.len(), 1, "the outbox's copy of an operator's ban is not archived twice");
    f2b.client_ok(&["set", "alpha", "unbanip", "192.0.2.42"]);
    history.get_ip_history(pb::GetIpHistoryRequest { ip: "192.0.2.41".into(), ..Default::default() }).await.unwrap();

    // Every jail operation, on web-1.
    let idle = jails
        .set_jail_idle(pb::SetJailIdleRequest {
            jail: "beta".into(),
            idle: true,
            host: host("web-1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(idle.idle);
    let params = jails
        .set_jail_params(pb::SetJailParamsRequest {
            jail: "beta".into(),
            maxretry: Some(7),
            host: host("web-1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(params.maxretry, 7);
    assert_eq!(f2b.client_ok(&["get", "beta", "maxretry"]).trim(), "7");
    let ignored = jails
        .add_ignore_ip(pb::AddIgnoreIpRequest {
            jail: "beta".into(),
            ip: "198.51.100.0/24".into(),
            host: host("web-1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ignored.ignore_ips.contains(&"198.51.100.0/24".to_owned()), "{ignored:?}");
    let removed = jails
        .remove_ignore_ip(pb::RemoveIgnoreIpRequest {
            jail: "beta".into(),
            ip: "198.51.100.0/24".into(),
            host: host("web-1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!removed.ignore_ips.contains(&"198.51.100.0/24".to_owned()));
    let missing = jails
        .stop_jail(pb::StopJailRequest { jail: "nope".into(), host: host("web-1"), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "web-1's fail2ban has no such jail: {missing:?}");
    let bad = jails.ban_ip(pb::BanIpRequest { ip: "999.1.1.1".into(), host: host("web-1"), ..ban.clone() }).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    let unknown = jails.ban_ip(pb::BanIpRequest { host: host("db-9"), ..ban.clone() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    // Reads without a host answer for every host: local is down, web-1
    // answers from what its agent pushed (with its age), or afresh.
    for fresh in [false, true] {
        let all = jails.list_jails(pb::ListJailsRequest { fresh, ..Default::default() }).await.unwrap().into_inner();
        assert!(all.jails.is_empty(), "the one-host field stays empty for several hosts");
        let web = all.hosts.iter().find(|h| h.outcome.as_ref().unwrap().host_name == "web-1").unwrap();
        let outcome = web.outcome.as_ref().unwrap();
        assert_eq!(outcome.code, 0, "{web:?}");
        assert_eq!(outcome.as_of.is_some(), !fresh, "pushed state says when it was read: {web:?}");
        let mut names: Vec<&str> = web.jails.iter().map(|j| j.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["alpha", "beta"]);
        let local = all.hosts.iter().find(|h| h.outcome.as_ref().unwrap().host_name == "local").unwrap();
        assert_eq!(local.outcome.as_ref().unwrap().code, Code::Unavailable as i32, "{local:?}");
        assert_eq!(all.hosts[0].outcome.as_ref().unwrap().host_name, "local", "local first");
    }
    // The pushed counters follow the host: web-1's ban shows within a refresh.
    bangui_e2e::eventually(20, "web-1's pushed counters show its ban", || {
        let mut jails = jails.clone();
        async move {
            let all = jails.list_jails(pb::ListJailsRequest::default()).await.unwrap().into_inner();
            all.hosts
                .iter()
                .filter(|h| h.outcome.as_ref().unwrap().host_name == "web-1")
                .flat_map(|h| &h.jails)
                .any(|j| j.name == "alpha" && j.currently_banned == 1)
        }
    })
    .await;
    let listed = HostServiceClient::new(control.authed().await)
        .list_hosts(pb::ListHostsRequest {})
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let web = listed.iter().find(|h| h.name == "web-1").unwrap();
    assert_eq!(web.active_bans, 1, "{web:?}");
    assert!(web.states_read_at.is_some(), "{web:?}");
    let status = jails.get_server_status(pb::GetServerStatusRequest::default()).await.unwrap().into_inner();
    assert_eq!(status.hosts.len(), 2);
    let bans = jails.list_active_bans(pb::ListActiveBansRequest::default()).await.unwrap().into_inner();
    assert_eq!(
        bans.bans.iter().map(|b| (b.host.as_str(), b.ip.as_str())).collect::<Vec<_>>(),
        [("web-1", "192.0.2.41")]
    );
    assert_eq!(outcome_of(&bans.hosts, "local").code, Code::Unavailable as i32);

    // all_hosts: each host answers for itself.
    let unban = jails
        .unban_ip(pb::UnbanIpRequest { ip: "192.0.2.41".into(), all_hosts: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let web = unban.hosts.iter().find(|h| h.outcome.as_ref().unwrap().host_name == "web-1").unwrap();
    assert_eq!((web.outcome.as_ref().unwrap().code, web.unbanned), (0, 1), "{unban:?}");
    assert!(f2b.banned("alpha").is_empty());
    let both = jails
        .unban_ip(pb::UnbanIpRequest {
            ip: "192.0.2.41".into(),
            all_hosts: true,
            host: host("web-1"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_is_unavailable_by_the_deadline_and_applies_nothing_late() {
    let f2b = Fail2banServer::start();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", dir.path().join("none.sock").to_str().unwrap()]);
    let agent = enrolled(&control, &f2b, dir.path(), "web-1").await;
    let mut jails = control.jails().await;

    agent.signal("-STOP");
    let asked = Instant::now();
    let ban =
        pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.77".into(), host: "web-1".into(), ..Default::default() };
    let status = jails.ban_ip(with_deadline(ban, Duration::from_secs(2))).await.unwrap_err();
    let took = asked.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("web-1"), "the host is named: {status:?}");
    assert!(took < Duration::from_secs(3), "answered by the deadline: {took:?}");

    // A fan-out read asking every host afresh: local and web-1 both
    // unreachable, answered in time.
    let asked = Instant::now();
    let all = jails
        .list_jails(with_deadline(pb::ListJailsRequest { fresh: true, ..Default::default() }, Duration::from_secs(2)))
        .await
        .unwrap()
        .into_inner();
    assert!(asked.elapsed() < Duration::from_secs(3), "{:?}", asked.elapsed());
    let web = all.hosts.iter().find(|h| h.outcome.as_ref().unwrap().host_name == "web-1").unwrap();
    assert_eq!(web.outcome.as_ref().unwrap().code, Code::Unavailable as i32, "{web:?}");

    // Resumed: it reads the ban it was sent, past its deadline, and drops it.
    agent.signal("-CONT");
    agent.wait_for("not run", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(f2b.banned("alpha").is_empty(), "a command past its deadline was applied");
    // And the host works again (its agent may have had to attach again).
    let ban =
        pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.78".into(), host: "web-1".into(), ..Default::default() };
    bangui_e2e::eventually(15, "web-1 takes a ban again", || {
        let (mut jails, ban) = (jails.clone(), ban.clone());
        async move { jails.ban_ip(ban).await.is_ok() }
    })
    .await;
    assert_eq!(f2b.banned("alpha"), vec!["192.0.2.78".to_owned()]);
}

/// Rows left in `host_commands` of `schema`.
async fn command_rows(schema: &PgSchema) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(&schema.options()).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM host_commands").fetch_one(&mut conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_the_host_through_the_replica_holding_its_stream() {
    let f2b = Fail2banServer::start();
    let dir = tempfile::tempdir().unwrap();
    let schema = PgSchema::create("fleet_commands").await;
    let url = schema.url();
    let none = dir.path().join("none.sock");
    let start = || ControlService::start(&["--database-url", &url, "--fail2ban-socket", none.to_str().unwrap()]);
    // The agent knows only `holder`; the calls go to `other`.
    let (holder, other) = (start(), start());
    let agent = enrolled(&holder, &f2b, dir.path(), "web-1").await;
    let mut jails = other.jails().await;

    let asked = Instant::now();
    let ban =
        pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.51".into(), host: "web-1".into(), ..Default::default() };
    assert!(jails.ban_ip(ban).await.unwrap().into_inner().newly_banned);
    println!("BanIp through the other replica: {:?}", asked.elapsed());
    assert_eq!(f2b.banned("alpha"), vec!["192.0.2.51".to_owned()]);
    let listed = jails
        .list_jails(pb::ListJailsRequest { host: "web-1".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<&str> = listed.jails.iter().map(|j| j.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["alpha", "beta"]);
    let missing = jails.get_jail(pb::GetJailRequest { jail: "nope".into(), host: "web-1".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "the host's own failure crosses replicas: {missing:?}");
    assert_eq!(command_rows(&schema).await, 0, "every row is deleted by its caller");

    // Stopped: UNAVAILABLE naming the host by the deadline; nothing applied later.
    agent.signal("-STOP");
    let asked = Instant::now();
    let ban =
        pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.52".into(), host: "web-1".into(), ..Default::default() };
    let status = jails.ban_ip(with_deadline(ban, Duration::from_secs(2))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("web-1"), "{status:?}");
    assert!(asked.elapsed() < Duration::from_secs(3), "{:?}", asked.elapsed());
    agent.signal("-CONT");
    agent.wait_for("not run", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f2b.banned("alpha"), vec!["192.0.2.51".to_owned()], "a command past its deadline was applied");
    assert_eq!(command_rows(&schema).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pure_control_plane_addresses_its_only_agent_without_a_host() {
    let f2b = Fail2banServer::start();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--local-fail2ban", "false"]);
    let mut jails = control.jails().await;
    // No host yet: nothing to address.
    let none = jails.list_jails(pb::ListJailsRequest::default()).await.unwrap_err();
    assert_eq!(none.code(), Code::NotFound, "{none:?}");
    let _agent = enrolled(&control, &f2b, dir.path(), "web-1").await;

    // One host: today's requests, without a host, are that host's.
    let ban = pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.61".into(), ..Default::default() };
    let banned = jails.ban_ip(ban).await.unwrap().into_inner();
    assert!(banned.newly_banned);
    assert_eq!(banned.hosts[0].outcome.as_ref().unwrap().host_name, "web-1");
    assert_eq!(f2b.banned("alpha"), vec!["192.0.2.61".to_owned()]);
    let status = jails.get_server_status(pb::GetServerStatusRequest::default()).await.unwrap().into_inner();
    assert!(status.online && status.jail_count == 2, "{status:?}");
    assert!(status.socket_path.is_empty(), "an agent's host has no socket here: {status:?}");
    let listed = jails.list_jails(pb::ListJailsRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.jails.len(), 2, "the one-host field is filled: {listed:?}");
    let local =
        jails.list_jails(pb::ListJailsRequest { host: "local".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(local.code(), Code::NotFound, "no host local here: {local:?}");
}

/// The `gc …` commands of the README's "Jail operations on a host" section.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(bangui_e2e::workspace_root().join("README.md")).unwrap();
    let section = &readme[readme.find("\n### Jail operations on a host\n").expect("the section")..];
    let block = &section[section.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    block.replace("\\\n", " ").lines().filter(|l| l.starts_with("gc ")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_host_forms_work_as_written() {
    let f2b = Fail2banServer::start();
    let local = Fail2banServer::start();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlService::start(&["--fail2ban-socket", &local.socket_str()]);
    let _agent = enrolled(&control, &f2b, dir.path(), "web-1").await;
    let token = control.token().await;
    let addr = control.grpc_addr.to_string();
    let commands = readme_commands();
    assert_eq!(commands.len(), 4, "{commands:?}");
    let mut outputs = Vec::new();
    for command in &commands {
        // The README's jail is `sshd`; the test servers' are `alpha` and `beta`.
        let command = command.replace("127.0.0.1:50052", &addr).replace("\"sshd\"", "\"alpha\"");
        let script = format!("gc() {{ grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" \"$@\"; }}\n{command}");
        let out = std::process::Command::new("bash").arg("-c").arg(&script).env("TOKEN", &token).output().unwrap();
        assert!(out.status.success(), "{command}\n{}", String::from_utf8_lossy(&out.stderr));
        outputs.push(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap());
    }
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["hosts"].as_array().unwrap().iter().map(|h| h["outcome"]["hostName"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&outputs[0]), ["local", "web-1"], "{}", outputs[0]);
    assert_eq!(outputs[1]["newlyBanned"], true, "{}", outputs[1]);
    assert_eq!(outputs[2]["bans"][0]["ip"], "203.0.113.7");
    assert_eq!(outputs[2]["bans"][0]["host"], "web-1");
    assert_eq!(names(&outputs[3]), ["local", "web-1"], "{}", outputs[3]);
    let web = outputs[3]["hosts"].as_array().unwrap().iter().find(|h| h["outcome"]["hostName"] == "web-1").unwrap();
    assert_eq!(web["unbanned"], 1, "{web}");
    assert!(f2b.banned("alpha").is_empty() && local.banned("alpha").is_empty());
}
