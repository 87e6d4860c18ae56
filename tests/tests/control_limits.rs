//! Request and response limits of the control-service, against the real
//! binary: an oversized request is refused from its length prefix and the
//! process keeps answering; RPCs beyond the in-flight limit are shed at
//! once (RESOURCE_EXHAUSTED with RetryInfo), none hangs, health is never
//! shed; the server advertises its per-connection stream limit; GetIpHistory
//! pages an address's events; BanTrend refuses bucket counts and times
//! that would overflow before any SQL, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bangui_e2e::{ControlService, PgSchema};
use bangui_proto::{
    control::v1::{self as pb, history_service_client::HistoryServiceClient},
    prost_types::Timestamp,
};
use tonic::Code;
use tonic_types::StatusExt;

/// The field named by an INVALID_ARGUMENT's BadRequest detail.
fn bad_field(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest detail: {status:?}"));
    bad.field_violations[0].field.clone()
}

fn no_fail2ban(dir: &tempfile::TempDir) -> String {
    dir.path().join("none.sock").display().to_string()
}

async fn history(control: &ControlService) -> HistoryServiceClient<bangui_e2e::Authed> {
    HistoryServiceClient::new(control.authed().await)
}

async fn assert_serving(control: &ControlService) {
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(control.health("").await, ServingStatus::Serving);
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_service_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let socket = no_fail2ban(&dir);
    let control = ControlService::start(&["--fail2ban-socket", &socket]);
    let token = control.token().await;

    // 1 MiB: refused from the length prefix (default limit 64 KiB), with or without a session.
    let huge = "x".repeat(1 << 20);
    let err = control.auth().await.login(pb::LoginRequest { password: huge.clone() }).await.unwrap_err();
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted), "{err:?}");
    let mut settings = control.settings().await;
    let request = pb::UpdateSettingsRequest { history_sync_schedule: Some(huge), ..Default::default() };
    let err = settings.update_settings(request).await.unwrap_err();
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted), "{err:?}");
    assert!(err.message().contains("65536"), "the limit is named: {err:?}");

    // Under the limit a request is decoded and its fields checked one by one.
    let mut history = history(&control).await;
    let request = pb::ListBansRequest { page_token: "A".repeat(60 * 1024), ..Default::default() };
    assert_eq!(bad_field(&history.list_bans(request).await.unwrap_err()), "page_token");
    let filter = pb::HistoryFilter { ip_prefix: "1".repeat(1000), ..Default::default() };
    let request = pb::ListBansRequest { filter: Some(filter), ..Default::default() };
    assert_eq!(bad_field(&history.list_bans(request).await.unwrap_err()), "filter.ip_prefix");
    let filter = pb::HistoryFilter { jail: "j".repeat(1000), ..Default::default() };
    let request = pb::ListBansRequest { filter: Some(filter), ..Default::default() };
    assert_eq!(bad_field(&history.list_bans(request).await.unwrap_err()), "filter.jail");

    // Alive and answering, the session still good.
    assert_serving(&control).await;
    let session = control.auth_with(&token).await.get_session(pb::GetSessionRequest {}).await.unwrap();
    assert_eq!(session.into_inner().client, "127.0.0.1");
    history.list_bans(pb::ListBansRequest::default()).await.unwrap();
    // The limit is a flag: at 1 KiB a 2 KiB password is refused.
    let small = ControlService::start(&["--fail2ban-socket", &socket, "--grpc-max-request-bytes", "1024"]);
    let err = small.auth().await.login(pb::LoginRequest { password: "y".repeat(2048) }).await.unwrap_err();
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted), "{err:?}");
}

/// A fail2ban socket that accepts and never answers: every fail2ban
/// command waits for its deadline, so RPCs stay in flight.
fn silent_fail2ban(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_beyond_the_in_flight_limit_are_shed_at_once_and_none_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let socket = silent_fail2ban(&dir);
    let control = ControlService::start(&[
        "--fail2ban-socket",
        &socket,
        "--fail2ban-timeout",
        "2s",
        "--grpc-max-in-flight",
        "4",
        // Probes would take fail2ban slots for their whole deadline too.
        "--probe-interval",
        "1h",
    ]);
    control.token().await;
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(control.authed().await);
    }
    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0..24 {
        let mut jails = pb::jail_service_client::JailServiceClient::new(channels[i % channels.len()].clone());
        calls.push(tokio::spawn(async move {
            let begun = Instant::now();
            let answer = tokio::time::timeout(
                Duration::from_secs(30),
                jails.list_jails(pb::ListJailsRequest { ..Default::default() }),
            )
            .await;
            (answer.expect("an RPC hung past 30 s"), begun.elapsed())
        }));
    }
    // While the slots are taken, health still answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_serving(&control).await;

    let (mut shed, mut admitted) = (0, 0);
    for call in calls {
        let (answer, took) = call.await.unwrap();
        let status = answer.expect_err("fail2ban never answers");
        if status.message().contains("server busy") {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            let retry = status.get_details_retry_info().expect("a RetryInfo detail").retry_delay.unwrap();
            assert_eq!(retry, Duration::from_secs(1));
            // Shed at once, not queued behind the slow ones.
            assert!(took < Duration::from_secs(1), "a shed RPC took {took:?}");
            shed += 1;
        } else {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            admitted += 1;
        }
    }
    assert!((1..=4 + 2).contains(&admitted), "admitted {admitted}, shed {shed}");
    assert!(shed >= 24 - 6, "admitted {admitted}, shed {shed}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    // Slots come back: alive and answering.
    assert_serving(&control).await;
    let status = control.auth().await.get_setup_status(pb::GetSetupStatusRequest {}).await.unwrap();
    assert!(status.into_inner().password_set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_is_advertised_and_clients_queue_beyond_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = no_fail2ban(&dir);
    let control = ControlService::start(&["--fail2ban-socket", &socket, "--grpc-max-concurrent-streams", "4"]);

    // The server's SETTINGS_MAX_CONCURRENT_STREAMS, read on a raw HTTP/2 connection.
    let tcp = tokio::net::TcpStream::connect(control.grpc_addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.current_max_send_streams() != 4 {
        assert!(Instant::now() < deadline, "advertised {}", client.current_max_send_streams());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 40 RPCs at once on one connection: the client queues beyond 4, all
    // answer. (A burst sent before the server's SETTINGS arrived would have
    // the streams beyond 4 refused with REFUSED_STREAM, UNAVAILABLE at the
    // client: one call first, so the client knows the limit.)
    let channel = control.channel().await;
    let mut auth = pb::auth_service_client::AuthServiceClient::new(channel.clone());
    auth.get_setup_status(pb::GetSetupStatusRequest {}).await.unwrap();
    let mut calls = Vec::new();
    for _ in 0..40 {
        let mut auth = pb::auth_service_client::AuthServiceClient::new(channel.clone());
        calls.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(30), auth.get_setup_status(pb::GetSetupStatusRequest {})).await
        }));
    }
    for call in calls {
        call.await.unwrap().expect("an RPC hung").unwrap();
    }
    assert_serving(&control).await;
}

/// Seeds `n` events of one address (a minute apart, every fifth an unban,
/// the later half placed in DE) and of a second address.
const SEEDED_IP: &str = "198.51.100.7";
const SEEDED: i64 = 1200;
const SEED_START: i64 = 1_700_000_000;

fn seed_rows() -> Vec<(String, String, i64, &'static str, Option<&'static str>)> {
    let mut rows = Vec::new();
    for i in 0..SEEDED {
        let event = if i % 5 == 4 { "unban" } else { "ban" };
        let country = if i >= SEEDED / 2 { Some("DE") } else { None };
        let jail = if i % 2 == 0 { "sshd" } else { "nginx" };
        rows.push((jail.to_owned(), SEEDED_IP.to_owned(), SEED_START + i * 60, event, country));
    }
    rows.push(("sshd".to_owned(), "203.0.113.1".to_owned(), SEED_START, "ban", None));
    rows
}

/// [`seed_rows`] as one SQL script (test constants only, so literal
/// values), run as it is on either backend.
fn seed_sql() -> sqlx::AssertSqlSafe<String> {
    let values: Vec<String> = seed_rows()
        .into_iter()
        .map(|(jail, ip, at, event, country)| {
            let (code, name) = country.map_or(("NULL".to_owned(), "NULL"), |c| (format!("'{c}'"), "'Germany'"));
            format!("('{jail}', '{ip}', {at}, 600, 1, 'fail2ban', '{event}', 3, '[]', {code}, {name}, {at})")
        })
        .collect();
    sqlx::AssertSqlSafe(format!(
        "INSERT INTO ban_history (jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures, matches, \
         country_code, country_name, archived_at) VALUES {}",
        values.join(", ")
    ))
}

async fn seed_sqlite(path: &std::path::Path) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::raw_sql(seed_sql()).execute(&pool).await.unwrap();
    pool.close().await;
}

async fn seed_postgres(schema: &PgSchema) {
    let pool = sqlx::PgPool::connect_with(schema.options()).await.unwrap();
    sqlx::raw_sql(seed_sql()).execute(&pool).await.unwrap();
    pool.close().await;
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

/// GetIpHistory: a bounded page, the totals over everything, the rest by token.
async fn ip_history_pages(history: &mut HistoryServiceClient<bangui_e2e::Authed>) {
    let request = |page_size, page_token: &str| pb::GetIpHistoryRequest {
        ip: SEEDED_IP.into(),
        page_size,
        page_token: page_token.into(),
        host: String::new(),
    };
    let first = history.get_ip_history(request(0, "")).await.unwrap().into_inner();
    assert_eq!(first.events.len(), 100, "default page");
    assert!(!first.next_page_token.is_empty());
    // The totals cover every event, not the page.
    assert_eq!(first.bans + first.unbans, SEEDED as u64);
    assert_eq!(first.unbans, (SEEDED / 5) as u64);
    assert_eq!(first.jails, ["nginx", "sshd"]);
    assert_eq!(first.first_banned_at, at(SEED_START));
    assert_eq!(first.last_banned_at, at(SEED_START + (SEEDED - 2) * 60), "the last event is an unban");
    assert_eq!(first.country_code, "DE");

    // A larger page is capped at 1000; the token walks the rest, oldest first, nothing twice.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = history.get_ip_history(request(5000, &token)).await.unwrap().into_inner();
        assert!(page.events.len() <= 1000, "{}", page.events.len());
        seen.extend(page.events.iter().map(|e| (e.banned_at.unwrap().seconds, e.event.clone())));
        pages += 1;
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages < 10, "the pages never end");
    }
    assert_eq!(pages, 2);
    let expected: Vec<(i64, String)> = seed_rows()
        .into_iter()
        .filter(|r| r.1 == SEEDED_IP)
        .map(|(_, _, at, event, _)| (at, event.to_owned()))
        .collect();
    assert_eq!(seen, expected);
    let err = history.get_ip_history(request(0, "not-a-token")).await.unwrap_err();
    assert_eq!(bad_field(&err), "page_token");
}

/// BanTrend: bucket counts and times checked before SQL.
async fn trend_limits(history: &mut HistoryServiceClient<bangui_e2e::Authed>) {
    let trend =
        |filter: pb::HistoryFilter, bucket_seconds| pb::BanTrendRequest { filter: Some(filter), bucket_seconds };
    let window = |from: i64, to: i64| pb::HistoryFilter { from: at(from), to: at(to), ..Default::default() };

    // Too many buckets: named by the field that makes them.
    let year = pb::HistoryFilter { window: pb::Window::Window365d.into(), ..Default::default() };
    let err = history.ban_trend(trend(year, 1)).await.unwrap_err();
    assert_eq!(bad_field(&err), "bucket_seconds");
    let all = pb::HistoryFilter { window: pb::Window::All.into(), ..Default::default() };
    let err = history.ban_trend(trend(all.clone(), 1)).await.unwrap_err();
    assert_eq!(bad_field(&err), "bucket_seconds", "all time: from the first seeded ban to now, in seconds");
    // Times that would overflow: refused naming the field, never "database unavailable".
    for (from, to, field) in [
        (i64::MIN, SEED_START, "filter.from"),
        (-9_000_000_000_000_000_000, 0, "filter.from"),
        (0, i64::MAX, "filter.to"),
    ] {
        let err = history.ban_trend(trend(window(from, to), 3600)).await.unwrap_err();
        assert_eq!(bad_field(&err), field, "{from}..{to}");
        let request = pb::ListBansRequest { filter: Some(window(from, to)), ..Default::default() };
        assert_eq!(bad_field(&history.list_bans(request).await.unwrap_err()), field);
    }
    // The widest valid window with the longest bucket: answered.
    let (min, max) = (-62_135_596_800, 253_402_300_799);
    let widest = history.ban_trend(trend(window(min, max), u32::MAX)).await.unwrap().into_inner();
    assert_eq!(widest.buckets.len() as i64, (max - min - 1) / i64::from(u32::MAX) + 1);
    let total: u64 = widest.buckets.iter().map(|b| b.bans).sum();
    assert!(total >= SEEDED as u64 - (SEEDED / 5) as u64, "{total}");
    // ... and with the default bucket it is too many buckets, named by the filter.
    assert_eq!(bad_field(&history.ban_trend(trend(window(min, max), 0)).await.unwrap_err()), "filter");
    // All time by week: from the first ban's week to now.
    let week = 7 * 86_400;
    let weekly = history.ban_trend(trend(all, week as u32)).await.unwrap().into_inner();
    assert!(weekly.buckets.len() > 100 && weekly.buckets.len() <= 10_000, "{}", weekly.buckets.len());
    assert_eq!(weekly.buckets[0].start, at(SEED_START - SEED_START % week));
    // The widest window counts what the weekly answer counts.
    assert_eq!(total, weekly.buckets.iter().map(|b| b.bans).sum::<u64>());
}

#[tokio::test]
async fn ip_history_pages_and_trend_limits_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let socket = no_fail2ban(&dir);
    let db = dir.path().join("control.db");
    let url = format!("sqlite://{}", db.display());
    let control = ControlService::start(&["--fail2ban-socket", &socket, "--database-url", &url]);
    seed_sqlite(&db).await;
    let mut history = history(&control).await;
    ip_history_pages(&mut history).await;
    trend_limits(&mut history).await;
    assert_serving(&control).await;
}

#[tokio::test]
async fn ip_history_pages_and_trend_limits_on_postgres() {
    let schema = PgSchema::create("control_limits").await;
    let dir = tempfile::tempdir().unwrap();
    let socket = no_fail2ban(&dir);
    let url = schema.url();
    let control = ControlService::start(&["--fail2ban-socket", &socket, "--database-url", &url]);
    seed_postgres(&schema).await;
    let mut history = history(&control).await;
    ip_history_pages(&mut history).await;
    trend_limits(&mut history).await;
    assert_serving(&control).await;
}
