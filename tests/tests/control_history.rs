//! The ban history archive end to end: a real fail2ban-server bans from
//! log lines, the leader's sync archives the bans with countries from a
//! real geo-service (fixture database), the dashboard queries return them;
//! fail2ban's purge loses nothing already archived, a second sync adds
//! nothing, and with the geo-service unreachable rows are archived without
//! a country and back-filled later.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bangui_e2e::{ControlService, GeoService, eventually, fail2ban::Fail2banServer, proxy::CutProxy};
use bangui_proto::control::v1::{self as pb, history_service_client::HistoryServiceClient};

fn day() -> Option<pb::HistoryFilter> {
    Some(pb::HistoryFilter { window: pb::Window::Window24h.into(), ..Default::default() })
}

async fn all_bans(history: &mut HistoryServiceClient<bangui_e2e::Authed>) -> Vec<pb::ArchivedBan> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = history
            .list_bans(pb::ListBansRequest { filter: day(), page_size: 2, page_token: token })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.bans);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_are_archived_with_countries_and_survive_fail2bans_purge() {
    let f2b = Fail2banServer::start();
    let geo = GeoService::start(&["--mmdb", "builtin:sample"]);
    let proxy = CutProxy::start(geo.grpc_addr).await;
    let control = ControlService::start(&[
        "--fail2ban-socket",
        &f2b.socket_str(),
        "--geo-endpoint",
        &format!("http://{}", proxy.addr),
        "--geo-timeout",
        "1s",
        "--lease-ttl",
        "2s",
        "--lease-retry",
        "200ms",
    ]);
    let token = control.token().await;
    let mut settings = control.settings().await;
    settings
        .update_settings(pb::UpdateSettingsRequest {
            history_sync_schedule: Some("* * * * * *".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut history = HistoryServiceClient::new(control.authed_with(&token).await);

    // Bans from log lines (alpha bans after 3 failures), and one made through the API.
    f2b.fail_logins("alpha", "8.8.8.8", 3);
    f2b.fail_logins("alpha", "81.2.69.160", 3);
    f2b.fail_logins("alpha", "203.0.113.50", 3);
    let mut jails = control.jails().await;
    jails.ban_ip(pb::BanIpRequest { jail: "beta".into(), ip: "8.8.8.9".into() }).await.unwrap();
    // The manual ban is archived at once.
    let manual =
        pb::HistoryFilter { window: pb::Window::Window24h.into(), origin: "manual".into(), ..Default::default() };
    let page =
        history.list_bans(pb::ListBansRequest { filter: Some(manual.clone()), ..Default::default() }).await.unwrap();
    assert_eq!(page.into_inner().bans.iter().map(|b| b.ip.as_str()).collect::<Vec<_>>(), ["8.8.8.9"]);

    let deadline = Instant::now() + Duration::from_secs(30);
    while all_bans(&mut history).await.len() != 4 {
        if Instant::now() > deadline {
            let logs = control.logs().join("\n");
            panic!("timed out waiting for four archived bans: {:?}\n{logs}", all_bans(&mut history).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bans = all_bans(&mut history).await;
    let by_ip = |ip: &str| bans.iter().find(|b| b.ip == ip).unwrap().clone();
    assert_eq!((by_ip("8.8.8.8").country_code.as_str(), by_ip("8.8.8.8").origin.as_str()), ("US", "fail2ban"));
    assert_eq!(by_ip("8.8.8.8").asn, 15169);
    assert_eq!(by_ip("81.2.69.160").country_code, "GB");
    assert_eq!(by_ip("203.0.113.50").country_code, "", "documentation range: no country");
    assert_eq!(by_ip("8.8.8.9").origin, "manual", "the sync found the same ban and left it manual");
    assert!(by_ip("8.8.8.8").failures >= 3 && !by_ip("8.8.8.8").matches.is_empty(), "{:?}", by_ip("8.8.8.8"));

    let countries = history.bans_by_country(pb::BansByCountryRequest { filter: day() }).await.unwrap().into_inner();
    let count = |code: &str| countries.countries.iter().find(|c| c.country_code == code).map(|c| c.bans);
    assert_eq!((count("US"), count("GB"), count("")), (Some(2), Some(1), Some(1)));
    let trend = history.ban_trend(pb::BanTrendRequest { filter: day(), bucket_seconds: 0 }).await.unwrap().into_inner();
    assert_eq!(trend.bucket_seconds, 3600);
    assert!(trend.buckets.len() >= 24, "empty buckets are there too: {}", trend.buckets.len());
    assert_eq!(trend.buckets.iter().map(|b| b.bans).sum::<u64>(), 4);
    let jails_count = history.bans_by_jail(pb::BansByJailRequest { filter: day() }).await.unwrap().into_inner().jails;
    assert_eq!(jails_count.iter().map(|j| (j.jail.as_str(), j.bans)).collect::<Vec<_>>(), [("alpha", 3), ("beta", 1)]);
    // The README's grpcurl forms: enum windows and RFC 3339 times.
    let bearer = format!("authorization: Bearer {token}");
    let addr = control.grpc_addr.to_string();
    let json = bangui_e2e::grpcurl_json(&[
        "-plaintext",
        "-H",
        &bearer,
        "-d",
        r#"{"filter": {"window": "WINDOW_24H"}}"#,
        &addr,
        "bangui.control.v1.HistoryService/BansByCountry",
    ]);
    assert_eq!(json["countries"][0]["countryCode"], "US");
    let from = "2000-01-01T00:00:00Z";
    let json = bangui_e2e::grpcurl_json(&[
        "-plaintext",
        "-H",
        &bearer,
        "-d",
        &format!(r#"{{"filter": {{"from": "{from}", "to": "2100-01-01T00:00:00Z", "ip_prefix": "81.2.69."}}}}"#),
        &addr,
        "bangui.control.v1.HistoryService/ListBans",
    ]);
    assert_eq!(json["bans"][0]["ip"], "81.2.69.160");
    let one = history
        .get_ip_history(pb::GetIpHistoryRequest { ip: "8.8.8.8".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((one.bans, one.country_code.as_str(), one.jails.clone()), (1, "US", vec!["alpha".to_owned()]));

    // fail2ban purges its rows: nothing archived is lost, and syncing again adds nothing.
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", f2b.dir().join("run/f2b.sqlite3").display())).await.unwrap();
    sqlx::query("DELETE FROM bans").execute(&pool).await.unwrap();
    pool.close().await;
    let mut cluster = control.cluster_with(&token).await;
    cluster.run_job_now(pb::RunJobNowRequest { job: "history_sync".into() }).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(all_bans(&mut history).await.len(), 4);

    // The geo-service unreachable: a new ban is archived without a country...
    proxy.cut();
    f2b.fail_logins("alpha", "81.2.69.161", 3);
    eventually(30, "the ban archived without a country", || {
        let mut history = history.clone();
        async move { all_bans(&mut history).await.iter().any(|b| b.ip == "81.2.69.161" && b.country_code.is_empty()) }
    })
    .await;
    // ...and placed by the back-fill once it is back.
    proxy.restore();
    cluster.run_job_now(pb::RunJobNowRequest { job: "history_geo_backfill".into() }).await.unwrap();
    eventually(15, "the back-filled country", || {
        let mut history = history.clone();
        async move { all_bans(&mut history).await.iter().any(|b| b.ip == "81.2.69.161" && b.country_code == "GB") }
    })
    .await;
    // An unban through the API is an event in the address's timeline.
    jails.unban_ip(pb::UnbanIpRequest { ip: "8.8.8.9".into(), jail: None }).await.unwrap();
    let timeline = history
        .get_ip_history(pb::GetIpHistoryRequest { ip: "8.8.8.9".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((timeline.bans, timeline.unbans), (1, 1), "{timeline:?}");
    assert_eq!(timeline.events.last().unwrap().event, "unban");
    assert_eq!(timeline.events.last().unwrap().jail, "beta");
    let top = history.top_ips(pb::TopIpsRequest { filter: day(), limit: 2 }).await.unwrap().into_inner();
    assert_eq!(top.ips.len(), 2);
}
