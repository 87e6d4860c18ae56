//! The control-service against a real fail2ban-server: every JailService
//! RPC, checked from the other side with the real fail2ban-client; bans
//! produced by log lines; bad input refused before the socket; fail2ban
//! stopping and coming back under a running service.

use bangui_e2e::{ControlService, GeoService, eventually, fail2ban::Fail2banServer};
use bangui_proto::control::v1 as pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

fn start_control(f2b: &Fail2banServer, extra: &[&str]) -> ControlService {
    let socket = f2b.socket_str();
    let config = f2b.config_dir().display().to_string();
    let mut args = vec!["--fail2ban-socket", socket.as_str(), "--fail2ban-config-dir", config.as_str()];
    args.extend_from_slice(&["--probe-interval", "200ms"]);
    args.extend_from_slice(extra);
    ControlService::start(&args)
}

/// Sum of `control_fail2ban_commands_total` over every label but the health
/// probe's `ping`: how many commands requests sent to the socket.
async fn commands_sent(control: &ControlService) -> u64 {
    control
        .metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("control_fail2ban_commands_total{") && !l.contains("command=\"ping\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn status_list_and_jail_detail_match_fail2ban() {
    let f2b = Fail2banServer::start();
    let control = start_control(&f2b, &[]);
    let mut jails = control.jails().await;

    let status =
        jails.get_server_status(pb::GetServerStatusRequest { ..Default::default() }).await.unwrap().into_inner();
    assert!(status.online, "{status:?}");
    assert_eq!(status.version, "1.0.2");
    assert_eq!(status.jail_count, 2);
    assert_eq!(status.socket_path, f2b.socket_str());

    let list = jails.list_jails(pb::ListJailsRequest { ..Default::default() }).await.unwrap().into_inner().jails;
    let names: Vec<&str> = list.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(list.iter().all(|j| j.enabled && j.idle.is_none()));

    let alpha =
        jails.get_jail(pb::GetJailRequest { jail: "alpha".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((alpha.bantime_seconds, alpha.findtime_seconds, alpha.maxretry), (3600, 600, 3));
    assert_eq!(alpha.log_paths, [f2b.dir().join("alpha.log").display().to_string()]);
    assert_eq!(alpha.actions, ["dummy"]);
    assert!(alpha.bans.is_empty() && alpha.ignore_ips.is_empty());
    let beta =
        jails.get_jail(pb::GetJailRequest { jail: "beta".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(beta.maxretry, 5);
}

#[tokio::test]
async fn ban_and_unban_are_seen_by_fail2ban_client() {
    let f2b = Fail2banServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("control.db");
    let url = format!("sqlite://{}", db.display());
    let control = start_control(&f2b, &["--database-url", &url]);
    let mut jails = control.jails().await;

    let ban = |jail: &str, ip: &str| pb::BanIpRequest { jail: jail.into(), ip: ip.into(), ..Default::default() };
    assert!(jails.ban_ip(ban("alpha", "192.0.2.10")).await.unwrap().into_inner().newly_banned);
    assert!(jails.ban_ip(ban("alpha", "2001:DB8::10")).await.unwrap().into_inner().newly_banned);
    assert!(!jails.ban_ip(ban("alpha", "192.0.2.10")).await.unwrap().into_inner().newly_banned, "already banned");
    assert!(jails.ban_ip(ban("beta", "192.0.2.10")).await.unwrap().into_inner().newly_banned);
    let mut alpha = f2b.banned("alpha");
    alpha.sort();
    assert_eq!(alpha, ["192.0.2.10", "2001:db8::10"]);
    assert_eq!(f2b.banned("beta"), ["192.0.2.10"]);

    // Detail: when, and until when.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let alpha =
        jails.get_jail(pb::GetJailRequest { jail: "alpha".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(alpha.bans.len(), 2);
    for b in &alpha.bans {
        let at = b.banned_at.unwrap().seconds;
        assert!((now - 5..=now + 1).contains(&at), "banned_at {at}, now {now}");
        assert_eq!(b.expires_at.unwrap().seconds, at + 3600);
        assert_eq!(b.ban_seconds, 3600);
    }
    assert_eq!(alpha.summary.unwrap().currently_banned, 2);

    // Unban from one jail, then from every jail.
    let unban = |ip: &str, jail: Option<&str>| pb::UnbanIpRequest {
        ip: ip.into(),
        jail: jail.map(Into::into),
        ..Default::default()
    };
    assert_eq!(jails.unban_ip(unban("2001:db8::10", Some("alpha"))).await.unwrap().into_inner().unbanned, 1);
    assert_eq!(f2b.banned("alpha"), ["192.0.2.10"]);
    assert_eq!(jails.unban_ip(unban("192.0.2.10", None)).await.unwrap().into_inner().unbanned, 2);
    assert!(f2b.banned("alpha").is_empty() && f2b.banned("beta").is_empty());
    assert_eq!(jails.unban_ip(unban("192.0.2.10", None)).await.unwrap().into_inner().unbanned, 0, "nothing left");

    // A ban made with fail2ban-client shows up in ListActiveBans (no geo-service: no countries).
    f2b.client_ok(&["set", "beta", "banip", "198.51.100.7"]);
    let active = jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap().into_inner();
    assert!(!active.geo_available);
    assert_eq!(active.bans.len(), 1);
    assert_eq!((active.bans[0].jail.as_str(), active.bans[0].ip.as_str()), ("beta", "198.51.100.7"));
    assert!(active.bans[0].country_code.is_empty());

    // Every change is in the control database's log.
    control.shutdown().await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT action, coalesce(jail, '*'), ip, outcome FROM jail_actions ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let rows: Vec<String> = rows.into_iter().map(|(a, j, ip, o)| format!("{a}|{j}|{ip}|{o}")).collect();
    assert_eq!(
        rows,
        [
            "ban|alpha|192.0.2.10|ok",
            "ban|alpha|2001:db8::10|ok",
            "ban|alpha|192.0.2.10|ok",
            "ban|beta|192.0.2.10|ok",
            "unban|alpha|2001:db8::10|ok",
            "unban|*|192.0.2.10|ok",
            "unban|*|192.0.2.10|ok",
        ]
    );
}

#[tokio::test]
async fn failed_logins_in_the_log_produce_a_ban() {
    let f2b = Fail2banServer::start();
    let control = start_control(&f2b, &[]);
    let mut jails = control.jails().await;
    // alpha bans after 3 failures, beta after 5: 4 failures ban in alpha only.
    f2b.fail_logins("alpha", "203.0.113.50", 4);
    f2b.fail_logins("beta", "203.0.113.51", 4);
    eventually(20, "the ban from the log", || {
        let mut jails = jails.clone();
        async move {
            let bans = jails
                .list_active_bans(pb::ListActiveBansRequest { ..Default::default() })
                .await
                .unwrap()
                .into_inner()
                .bans;
            bans.iter().any(|b| b.jail == "alpha" && b.ip == "203.0.113.50")
        }
    })
    .await;
    // beta reads its log on its own schedule: wait until it counted the four failures.
    eventually(20, "beta counting failures", || {
        let mut jails = jails.clone();
        async move {
            let status = jails
                .get_server_status(pb::GetServerStatusRequest { ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            status.total_failed >= 8
        }
    })
    .await;
    let beta =
        jails.get_jail(pb::GetJailRequest { jail: "beta".into(), ..Default::default() }).await.unwrap().into_inner();
    assert!(beta.bans.is_empty(), "4 failures are under beta's maxretry of 5");
    assert_eq!(beta.summary.unwrap().currently_failed, 1, "one address is counting failures");
    let status =
        jails.get_server_status(pb::GetServerStatusRequest { ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(status.currently_banned, 1);
    assert_eq!(f2b.banned("alpha"), ["203.0.113.50"]);
}

#[tokio::test]
async fn unknown_jails_are_not_found_and_bad_input_never_reaches_the_socket() {
    let f2b = Fail2banServer::start();
    let control = start_control(&f2b, &[]);
    let mut jails = control.jails().await;

    let err = jails.get_jail(pb::GetJailRequest { jail: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("nope"));
    let err = jails
        .ban_ip(pb::BanIpRequest { jail: "nope".into(), ip: "192.0.2.1".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let before = commands_sent(&control).await;
    let bad = [
        pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.300".into(), ..Default::default() },
        pb::BanIpRequest { jail: "alpha".into(), ip: "not-an-ip".into(), ..Default::default() },
        pb::BanIpRequest { jail: "alpha".into(), ip: "1.2.3.4<F2B_END_COMMAND>".into(), ..Default::default() },
        pb::BanIpRequest { jail: "alpha<F2B_CLOSE_COMMAND>".into(), ip: "192.0.2.1".into(), ..Default::default() },
        pb::BanIpRequest { jail: "".into(), ip: "192.0.2.1".into(), ..Default::default() },
    ];
    for request in bad {
        let err = jails.ban_ip(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{request:?}: {err:?}");
        let violations = err.get_details_bad_request().expect("a BadRequest detail").field_violations;
        let expected = if request.jail.contains('<') || request.jail.is_empty() { "jail" } else { "ip" };
        assert_eq!(violations[0].field, expected, "{request:?}");
    }
    let err = jails
        .add_ignore_ip(pb::AddIgnoreIpRequest { jail: "alpha".into(), ip: "10.0.0.0/40".into(), ..Default::default() })
        .await;
    assert_eq!(err.unwrap_err().code(), Code::InvalidArgument);
    let err = jails.set_jail_params(pb::SetJailParamsRequest { jail: "alpha".into(), ..Default::default() }).await;
    assert_eq!(err.unwrap_err().code(), Code::InvalidArgument);
    let err = jails
        .unban_ip(pb::UnbanIpRequest { ip: "192.0.2.1".into(), jail: Some("a b".into()), ..Default::default() })
        .await;
    assert_eq!(err.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(commands_sent(&control).await, before, "an invalid request sent something to fail2ban");
    assert!(f2b.banned("alpha").is_empty());
}

#[tokio::test]
async fn idle_params_ignore_list_stop_and_start() {
    let f2b = Fail2banServer::start();
    let control = start_control(&f2b, &[]);
    let mut jails = control.jails().await;

    let idle = jails
        .set_jail_idle(pb::SetJailIdleRequest { jail: "beta".into(), idle: true, ..Default::default() })
        .await
        .unwrap();
    assert!(idle.into_inner().idle);
    let list = jails.list_jails(pb::ListJailsRequest { ..Default::default() }).await.unwrap().into_inner().jails;
    assert_eq!(list.iter().find(|j| j.name == "beta").unwrap().idle, Some(true));
    let idle = jails
        .set_jail_idle(pb::SetJailIdleRequest { jail: "beta".into(), idle: false, ..Default::default() })
        .await
        .unwrap();
    assert!(!idle.into_inner().idle);

    let params = jails
        .set_jail_params(pb::SetJailParamsRequest {
            jail: "alpha".into(),
            bantime_seconds: Some(7200),
            findtime_seconds: None,
            maxretry: Some(7),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((params.bantime_seconds, params.findtime_seconds, params.maxretry), (7200, 600, 7));
    assert_eq!(f2b.client_ok(&["get", "alpha", "bantime"]).trim(), "7200");
    assert_eq!(f2b.client_ok(&["get", "alpha", "maxretry"]).trim(), "7");

    let added = jails
        .add_ignore_ip(pb::AddIgnoreIpRequest {
            jail: "alpha".into(),
            ip: "198.51.100.9/24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.ignore_ips, ["198.51.100.0/24"]);
    assert!(f2b.client_ok(&["get", "alpha", "ignoreip"]).contains("198.51.100.0/24"));
    let removed = jails
        .remove_ignore_ip(pb::RemoveIgnoreIpRequest {
            jail: "alpha".into(),
            ip: "198.51.100.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.ignore_ips.is_empty());

    // Stop: fail2ban forgets the jail; start: it comes back from the configuration.
    jails.stop_jail(pb::StopJailRequest { jail: "beta".into(), ..Default::default() }).await.unwrap();
    assert!(!f2b.client_ok(&["status"]).contains("beta"));
    let err = jails.get_jail(pb::GetJailRequest { jail: "beta".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let started = jails
        .start_jail(pb::StartJailRequest { jail: "beta".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(started.started);
    assert_eq!(started.summary.unwrap().name, "beta");
    assert!(f2b.client_ok(&["status"]).contains("alpha, beta"));
    let again = jails
        .start_jail(pb::StartJailRequest { jail: "beta".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.started, "already running");
    let err = jails.start_jail(pb::StartJailRequest { jail: "gamma".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "not in the configuration: {err:?}");
}

#[tokio::test]
async fn fail2ban_going_away_is_unavailable_and_its_return_needs_no_restart() {
    let mut f2b = Fail2banServer::start();
    let control = start_control(&f2b, &[]);
    let mut jails = control.jails().await;
    assert_eq!(control.health("fail2ban").await, ServingStatus::Serving);
    jails.list_jails(pb::ListJailsRequest { ..Default::default() }).await.unwrap();

    f2b.stop();
    let err = jails.list_jails(pb::ListJailsRequest { ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&f2b.socket_str()), "{}", err.message());
    let err = jails
        .ban_ip(pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.1".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let status =
        jails.get_server_status(pb::GetServerStatusRequest { ..Default::default() }).await.unwrap().into_inner();
    assert!(!status.online && !status.unavailable_reason.is_empty(), "{status:?}");
    eventually(10, "health fail2ban NOT_SERVING", || async {
        control.health("fail2ban").await == ServingStatus::NotServing
    })
    .await;
    // The service itself keeps serving.
    assert_eq!(control.health("").await, ServingStatus::Serving);
    assert!(control.metrics_text().await.contains("control_dependency_up{dependency=\"fail2ban\"} 0"));

    f2b.restart();
    let list = jails.list_jails(pb::ListJailsRequest { ..Default::default() }).await.unwrap().into_inner().jails;
    assert_eq!(list.len(), 2, "the next call works without restarting the service");
    assert!(
        jails
            .ban_ip(pb::BanIpRequest { jail: "alpha".into(), ip: "192.0.2.1".into(), ..Default::default() })
            .await
            .is_ok()
    );
    eventually(10, "health fail2ban SERVING", || async { control.health("fail2ban").await == ServingStatus::Serving })
        .await;
    assert_eq!(control.shutdown().await.code(), Some(0));
}

#[tokio::test]
async fn starts_without_fail2ban_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing.sock").display().to_string();
    let control = ControlService::start(&["--fail2ban-socket", &socket, "--probe-interval", "200ms"]);
    assert_eq!(control.health("").await, ServingStatus::Serving);
    assert_eq!(control.health("fail2ban").await, ServingStatus::NotServing);
    assert_eq!(control.health("database").await, ServingStatus::Serving);
    let mut jails = control.jails().await;
    let status =
        jails.get_server_status(pb::GetServerStatusRequest { ..Default::default() }).await.unwrap().into_inner();
    assert!(!status.online);
    assert!(status.unavailable_reason.contains("missing.sock"), "{status:?}");
    assert_eq!(
        jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap_err().code(),
        Code::Unavailable
    );
}

#[tokio::test]
async fn active_bans_carry_countries_from_the_geo_service_and_survive_its_absence() {
    let f2b = Fail2banServer::start();
    let geo = GeoService::start(&["--mmdb", "builtin:sample"]);
    let control = start_control(&f2b, &["--geo-endpoint", &geo.endpoint()]);
    let mut jails = control.jails().await;
    for (jail, ip) in [("alpha", "8.8.8.8"), ("beta", "81.2.69.160"), ("alpha", "192.0.2.77")] {
        jails.ban_ip(pb::BanIpRequest { jail: jail.into(), ip: ip.into(), ..Default::default() }).await.unwrap();
    }
    let located =
        jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap().into_inner();
    assert!(located.geo_available);
    let country = |ip: &str| {
        let b = located.bans.iter().find(|b| b.ip == ip).unwrap();
        (b.country_code.clone(), b.country_name.clone())
    };
    assert_eq!(country("8.8.8.8"), ("US".into(), "United States".into()));
    assert_eq!(country("81.2.69.160"), ("GB".into(), "United Kingdom".into()));
    assert_eq!(country("192.0.2.77"), (String::new(), String::new()), "documentation range: no country");
    eventually(10, "health geo SERVING", || async { control.health("geo").await == ServingStatus::Serving }).await;

    geo.shutdown().await;
    let without =
        jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap().into_inner();
    assert!(!without.geo_available);
    assert_eq!(without.bans.len(), 3, "the list still comes back");
    assert!(without.bans.iter().all(|b| b.country_code.is_empty()));
    eventually(10, "health geo NOT_SERVING", || async { control.health("geo").await == ServingStatus::NotServing })
        .await;
}
