//! The ban history archive end to end: a real fail2ban-server bans from
//! log lines, the leader's sync archives the bans with countries from a
//! real geo-service (fixture database), the dashboard queries return them;
//! fail2ban's purge loses nothing already archived, a second sync adds
//! nothing, and with the geo-service unreachable rows are archived without
//! a country and back-filled later. The sync loses no ban to a reused
//! rowid, archives rows with unreadable `data` without it, reads a large
//! table in bounded memory, and is `skipped` when fail2ban keeps no
//! database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bangui_e2e::{ControlService, GeoService, eventually, fail2ban::Fail2banServer, proxy::CutProxy};
use bangui_proto::control::v1::{
    self as pb, cluster_service_client::ClusterServiceClient, history_service_client::HistoryServiceClient,
};

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
    control.set_history_sync_schedule("* * * * * *").await;
    let mut history = HistoryServiceClient::new(control.authed_with(&token).await);

    // Bans from log lines (alpha bans after 3 failures), and one made through the API.
    f2b.fail_logins("alpha", "8.8.8.8", 3);
    f2b.fail_logins("alpha", "81.2.69.160", 3);
    f2b.fail_logins("alpha", "203.0.113.50", 3);
    let mut jails = control.jails().await;
    jails.ban_ip(pb::BanIpRequest { jail: "beta".into(), ip: "8.8.8.9".into(), ..Default::default() }).await.unwrap();
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
    jails.unban_ip(pb::UnbanIpRequest { ip: "8.8.8.9".into(), jail: None, ..Default::default() }).await.unwrap();
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

/// Settings that leave `history_sync` to [`run_sync`]: its schedule fires
/// once a year.
async fn sync_only_on_request(control: &ControlService) {
    control.set_history_sync_schedule("0 0 0 1 1 *").await;
}

/// Asks for a `history_sync` run and waits (up to `secs`) until it has
/// finished; returns its ledger row as ListJobs shows it.
async fn run_sync(cluster: &mut ClusterServiceClient<bangui_e2e::Authed>, secs: u64) -> pb::JobRun {
    let last = |jobs: Vec<pb::Job>| jobs.into_iter().find(|j| j.name == "history_sync").and_then(|j| j.last_run);
    let before = last(cluster.list_jobs(pb::ListJobsRequest {}).await.unwrap().into_inner().jobs);
    let before = before.and_then(|r| r.started_at).map(|t| (t.seconds, t.nanos));
    cluster.run_job_now(pb::RunJobNowRequest { job: "history_sync".into() }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let run = last(cluster.list_jobs(pb::ListJobsRequest {}).await.unwrap().into_inner().jobs);
        if let Some(run) = run
            && run.finished_at.is_some()
            && run.started_at.as_ref().map(|t| (t.seconds, t.nanos)) != before
        {
            return run;
        }
        assert!(Instant::now() < deadline, "history_sync did not run within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// fail2ban's database, read-only (fail2ban may be writing it).
async fn fail2ban_db(f2b: &Fail2banServer) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(f2b.database())
        .read_only(true)
        .busy_timeout(Duration::from_secs(5));
    sqlx::SqlitePool::connect_with(options).await.unwrap()
}

/// The rowid of `ip`'s row in fail2ban's `bans` table, once fail2ban has
/// written it (it does so from a thread of its own, after the ban).
async fn rowid_of(f2b: &Fail2banServer, ip: &str) -> i64 {
    let db = fail2ban_db(f2b).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rowid: Option<i64> =
            sqlx::query_scalar("SELECT rowid FROM bans WHERE ip = ?1").bind(ip).fetch_optional(&db).await.unwrap();
        if let Some(rowid) = rowid {
            db.close().await;
            return rowid;
        }
        assert!(Instant::now() < deadline, "fail2ban did not write the ban of {ip}:\n{}", f2b.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn events_of(history: &mut HistoryServiceClient<bangui_e2e::Authed>, ip: &str) -> pb::GetIpHistoryResponse {
    history.get_ip_history(pb::GetIpHistoryRequest { ip: ip.into(), ..Default::default() }).await.unwrap().into_inner()
}

/// fail2ban deletes a ban's row on unban and its table has no
/// AUTOINCREMENT: the next ban takes the deleted rowid again. A sync that
/// only read rows after the last rowid it saw would never archive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_that_reuses_an_unbanned_rows_rowid_is_archived() {
    let f2b = Fail2banServer::start();
    let control =
        ControlService::start(&["--fail2ban-socket", &f2b.socket_str(), "--lease-ttl", "2s", "--lease-retry", "200ms"]);
    let token = control.token().await;
    sync_only_on_request(&control).await;
    let mut cluster = control.cluster_with(&token).await;
    let mut history = HistoryServiceClient::new(control.authed_with(&token).await);

    // A is banned (by fail2ban itself, not through the service) and archived.
    f2b.client_ok(&["set", "alpha", "banip", "192.0.2.10"]);
    let rowid_a = rowid_of(&f2b, "192.0.2.10").await;
    let run = run_sync(&mut cluster, 30).await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!(events_of(&mut history, "192.0.2.10").await.bans, 1);

    // A is unbanned: fail2ban deletes its row...
    f2b.client_ok(&["set", "alpha", "unbanip", "192.0.2.10"]);
    let db = fail2ban_db(&f2b).await;
    eventually(20, "A's row deleted", || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bans WHERE ip = '192.0.2.10'")
                .fetch_one(&db)
                .await
                .unwrap()
                == 0
        }
    })
    .await;
    // ...and B's ban takes the same rowid.
    f2b.client_ok(&["set", "alpha", "banip", "192.0.2.11"]);
    let rowid_b = rowid_of(&f2b, "192.0.2.11").await;
    assert_eq!(rowid_b, rowid_a, "fail2ban reused the rowid");
    db.close().await;

    let run = run_sync(&mut cluster, 30).await;
    assert_eq!(run.status, "ok", "{run:?}");
    let b = events_of(&mut history, "192.0.2.11").await;
    assert_eq!((b.bans, b.jails.as_slice()), (1, ["alpha".to_owned()].as_slice()), "B archived: {b:?}");
    assert_eq!(b.events[0].origin, "fail2ban");
    // A's ban stays in the archive; nothing was archived twice.
    assert_eq!(events_of(&mut history, "192.0.2.10").await.bans, 1);
    let run = run_sync(&mut cluster, 30).await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!(events_of(&mut history, "192.0.2.11").await.bans, 1);
}

/// Rows whose `data` is not UTF-8, not JSON or too large to read are
/// archived with what can be read, counted and logged, and the rows after
/// them are still synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_with_unreadable_data_are_archived_without_it_and_do_not_stall_the_sync() {
    let mut f2b = Fail2banServer::start();
    // A ban from log lines before the odd rows...
    f2b.fail_logins("alpha", "192.0.2.30", 3);
    rowid_of(&f2b, "192.0.2.30").await;
    f2b.stop();
    // ...odd rows written while fail2ban is stopped...
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", f2b.database().display())).await.unwrap();
    let not_utf8: &[u8] = b"{\"matches\": [\"2026-12-01 auth failure from 192.0.2.31 \xff\xfe\"], \"failures\": 3}";
    let big_garbage = vec![b'x'; 100 * 1024];
    let too_large = format!(r#"{{"matches": ["{}"], "failures": 1}}"#, "y".repeat(5 * 1024 * 1024)).into_bytes();
    let odd: [(&str, &str, i64, i64, &[u8]); 4] = [
        ("alpha", "192.0.2.31", 3600, 2, not_utf8),
        ("beta", "192.0.2.32", 600, 3, b"this is not json"),
        ("beta", "192.0.2.33", 700, 4, &big_garbage),
        ("alpha", "192.0.2.34", 800, 5, &too_large),
    ];
    for (jail, ip, bantime, bancount, data) in odd {
        sqlx::query("INSERT INTO bans (jail, ip, timeofban, bantime, bancount, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .bind(jail)
            .bind(ip)
            .bind(now)
            .bind(bantime)
            .bind(bancount)
            .bind(data)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    // ...and one after them.
    f2b.restart();
    f2b.fail_logins("alpha", "192.0.2.35", 3);
    let last = rowid_of(&f2b, "192.0.2.35").await;
    assert!(last > rowid_of(&f2b, "192.0.2.34").await, "the good row comes after the odd ones");

    let control =
        ControlService::start(&["--fail2ban-socket", &f2b.socket_str(), "--lease-ttl", "2s", "--lease-retry", "200ms"]);
    let token = control.token().await;
    sync_only_on_request(&control).await;
    let mut cluster = control.cluster_with(&token).await;
    let mut history = HistoryServiceClient::new(control.authed_with(&token).await);
    let run = run_sync(&mut cluster, 30).await;
    assert_eq!(run.status, "ok", "{run:?}\n{}", control.logs().join("\n"));

    for (jail, ip, bantime, bancount, _) in odd {
        let h = events_of(&mut history, ip).await;
        assert_eq!(h.bans, 1, "{ip}: {h:?}");
        let ban = &h.events[0];
        assert_eq!(
            (ban.jail.as_str(), ban.ban_seconds, ban.ban_count, ban.banned_at.unwrap().seconds),
            (jail, bantime, bancount as i32, now),
            "{ip}: what could be read"
        );
        assert!(ban.matches.is_empty() && ban.failures == 0, "{ip}: {ban:?}");
    }
    for ip in ["192.0.2.30", "192.0.2.35"] {
        let h = events_of(&mut history, ip).await;
        assert_eq!(h.bans, 1, "{ip}: {h:?}");
        assert!(h.events[0].failures >= 3 && !h.events[0].matches.is_empty(), "{ip}: {h:?}");
        assert!(h.events[0].matches[0].contains(ip), "{ip}: {h:?}");
    }
    let count = |reason: &'static str| {
        let control = &control;
        async move {
            control
                .metric(&format!("control_history_unreadable_rows_total{{reason=\"{reason}\"}}"))
                .await
                .unwrap_or(0.0)
        }
    };
    assert_eq!((count("not_utf8").await, count("not_json").await, count("too_large").await), (1.0, 2.0, 1.0));
    let logs = control.logs();
    let logged: Vec<&String> = logs.iter().filter(|l| l.contains("data cannot be read")).collect();
    assert_eq!(logged.len(), 4, "{logged:#?}");
    assert!(logged.iter().any(|l| l.contains("192.0.2.31") && l.contains("not_utf8")), "{logged:#?}");
    // A second sync reads them again only as already archived.
    let run = run_sync(&mut cluster, 30).await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!(count("not_utf8").await, 1.0);
}

/// fail2ban with `dbfile = :memory:` keeps no database: the sync says so
/// once, and its runs are `skipped`, not failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fail2ban_database_the_sync_is_skipped_and_says_so_once() {
    let f2b = Fail2banServer::start_with_dbfile(Some(":memory:"));
    assert!(f2b.client_ok(&["get", "dbfile"]).contains(":memory:"));
    let control =
        ControlService::start(&["--fail2ban-socket", &f2b.socket_str(), "--lease-ttl", "2s", "--lease-retry", "200ms"]);
    let token = control.token().await;
    control.set_history_sync_schedule("* * * * * *").await;
    let skipped = r#"control_job_runs_total{job="history_sync",status="skipped"}"#;
    eventually(30, "three skipped history_sync runs", || async { control.metric(skipped).await.unwrap_or(0.0) >= 3.0 })
        .await;
    let mut cluster = control.cluster_with(&token).await;
    let jobs = cluster.list_jobs(pb::ListJobsRequest {}).await.unwrap().into_inner().jobs;
    let run = jobs.iter().find(|j| j.name == "history_sync").and_then(|j| j.last_run.clone()).unwrap();
    assert_eq!(run.status, "skipped", "{run:?}");
    assert!(run.error.contains("no database"), "{run:?}");
    assert_eq!(control.metric(r#"control_job_runs_total{job="history_sync",status="failed"}"#).await, None);
    let logs = control.logs();
    let said: Vec<&String> = logs.iter().filter(|l| l.contains("keeps no database")).collect();
    assert_eq!(said.len(), 1, "said once: {said:#?}");
}

/// A fail2ban database of 16 000 bans with 60 KiB and 200 KiB of `data`
/// each (about 2 GiB) is synced by the real service in bounded memory:
/// its peak RSS (VmHWM) stays under 128 MiB, and the bans keep their
/// latest log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fail2ban_database_is_synced_in_bounded_memory() {
    const ROWS: usize = 16_000;
    let mut f2b = Fail2banServer::start();
    f2b.stop();
    // Each line ~200 bytes; 1 000 lines ≈ 200 KiB, 300 ≈ 60 KiB.
    let data = |lines: usize| {
        let matches: Vec<String> = (0..lines)
            .map(|i| format!("2026-12-01 10:00:00 sshd[{i:05}]: auth failure from 198.18.0.1 {}", "z".repeat(150)))
            .collect();
        serde_json::json!({"matches": matches, "failures": lines}).to_string().into_bytes()
    };
    let (big, small) = (data(1_000), data(300));
    let total = (big.len() + small.len()) * ROWS / 2;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", f2b.database().display())).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..ROWS {
        let (jail, blob) = if i % 2 == 0 { ("alpha", &big) } else { ("beta", &small) };
        sqlx::query("INSERT INTO bans (jail, ip, timeofban, bantime, bancount, data) VALUES (?1, ?2, ?3, 600, 1, ?4)")
            .bind(jail)
            .bind(format!("198.18.{}.{}", i / 256, i % 256))
            .bind(now - ROWS as i64 + i as i64)
            .bind(blob.as_slice())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
    let file = std::fs::metadata(f2b.database()).unwrap().len();

    let db = f2b.database().display().to_string();
    let control = ControlService::start(&[
        "--fail2ban-socket",
        &f2b.socket_str(),
        "--fail2ban-db",
        &db,
        "--lease-ttl",
        "2s",
        "--lease-retry",
        "200ms",
    ]);
    let token = control.token().await;
    sync_only_on_request(&control).await;
    let mut cluster = control.cluster_with(&token).await;
    let started = Instant::now();
    let run = run_sync(&mut cluster, 600).await;
    let took = started.elapsed();
    let peak = control.peak_rss_kib();
    eprintln!(
        "synced {ROWS} bans ({} MiB of data, a {} MiB file) in {took:.1?}: control-service VmHWM {peak} KiB ({} MiB)",
        total >> 20,
        file >> 20,
        peak >> 10
    );
    assert_eq!(run.status, "ok", "{run:?}");
    let mut history = HistoryServiceClient::new(control.authed_with(&token).await);
    let all = Some(pb::HistoryFilter { window: pb::Window::All.into(), ..Default::default() });
    let jails = history.bans_by_jail(pb::BansByJailRequest { filter: all }).await.unwrap().into_inner().jails;
    let counts: Vec<(&str, u64)> = jails.iter().map(|j| (j.jail.as_str(), j.bans)).collect();
    assert_eq!(counts, [("alpha", ROWS as u64 / 2), ("beta", ROWS as u64 / 2)]);
    for (ip, failures) in [("198.18.0.0", 1_000), ("198.18.0.1", 300), ("198.18.62.127", 300)] {
        let ban = events_of(&mut history, ip).await.events.remove(0);
        assert_eq!((ban.failures, ban.matches.len()), (failures, 20), "{ip}");
        assert!(ban.matches[19].contains(&format!("sshd[{:05}]", failures - 1)), "the latest lines: {ban:?}");
        assert!(ban.matches.iter().all(|m| m.chars().count() <= 500));
    }
    assert!(peak < 128 * 1024, "VmHWM {peak} KiB");
}
