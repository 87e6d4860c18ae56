//! A host's ban history through the real `fail2ban-agent`'s outbox into the
//! real control-service's archive (issue 21, item 2): every ban of the
//! host's real fail2ban-server archived once with its host, across kill -9
//! of the agent mid-delivery and of the control-service while bans keep
//! coming; a hand-made agent's replayed batch stored once and its gap
//! refused; a day's backlog (100 000 events) delivered in bounded memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bangui_e2e::{ControlService, PgSchema, agent::AgentProcess, fail2ban::Fail2banServer};
use bangui_proto::{
    agent::v1::{self as agent_pb, agent_service_client::AgentServiceClient, attach_request, attach_response},
    control::v1::{self as pb, history_service_client::HistoryServiceClient, host_service_client::HostServiceClient},
};
use tokio_stream::wrappers::ReceiverStream;

/// A ban as fail2ban's database and the archive both have it.
type Key = (String, String, i64);

fn agent_endpoint(control: &ControlService) -> String {
    format!("http://{}", control.agent_addr().expect("the serving line names the agent port"))
}

/// A loopback port free right now (for a control-service restarted on
/// the same agent port).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn enrollment_token(control: &ControlService) -> String {
    let mut hosts = HostServiceClient::new(control.authed().await);
    hosts
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest { ttl_seconds: 600, note: "events".into() })
        .await
        .unwrap()
        .into_inner()
        .token
}

async fn token_file(control: &ControlService, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("enroll-token");
    std::fs::write(&path, enrollment_token(control).await).unwrap();
    path
}

async fn host_ids(control: &ControlService) -> Vec<String> {
    let mut client = HostServiceClient::new(control.authed().await);
    client.list_hosts(pb::ListHostsRequest {}).await.unwrap().into_inner().hosts.into_iter().map(|h| h.id).collect()
}

/// How many bans of `host` are archived (one aggregate query).
async fn archived_count(control: &ControlService, host: &str) -> u64 {
    let mut history = HistoryServiceClient::new(control.authed().await);
    let filter = pb::HistoryFilter { window: pb::Window::All as i32, host: host.into(), ..Default::default() };
    let jails = history.bans_by_jail(pb::BansByJailRequest { filter: Some(filter) }).await;
    jails.map_or(0, |r| r.into_inner().jails.iter().map(|j| j.bans).sum())
}

/// Every row of fail2ban's `bans` table.
async fn fail2ban_rows(path: &Path) -> Vec<Key> {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows = sqlx::query_as("SELECT jail, ip, timeofban FROM bans").fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows
}

/// fail2ban 1.0's `bans` table and indexes (server/database.py).
const F2B_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, \
     bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON); \
     CREATE INDEX IF NOT EXISTS bans_jail_timeofban_ip ON bans(jail, timeofban); \
     CREATE INDEX IF NOT EXISTS bans_jail_ip ON bans(jail, ip); CREATE INDEX IF NOT EXISTS bans_ip ON bans(ip);";

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Adds `count` bans of `jail` to fail2ban's database at `path` (a backlog
/// the host had before its agent ran), each with three log lines.
async fn add_backlog(path: &Path, jail: &str, count: usize, net: u8) {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(F2B_SCHEMA).execute(&pool).await.unwrap();
    let start = unix_now() - 86_400;
    let mut tx = pool.begin().await.unwrap();
    for i in 0..count {
        let ip = format!("10.{net}.{}.{}", i / 256 % 256, i % 256);
        let line = format!("2026-01-01 00:00:00 sshd auth failure from {ip}");
        let data = serde_json::json!({"matches": vec![line; 3], "failures": 3}).to_string();
        sqlx::query("INSERT INTO bans (jail, ip, timeofban, bantime, bancount, data) VALUES (?1, ?2, ?3, 600, 1, ?4)")
            .bind(jail)
            .bind(&ip)
            .bind(start + i as i64 / 2)
            .bind(data)
            .execute(&mut *tx)
            .await
            .unwrap();
        if i % 10_000 == 9_999 {
            tx.commit().await.unwrap();
            tx = pool.begin().await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    pool.close().await;
}

/// Compares the archive of `host` with fail2ban's rows: (lost, twice).
fn compare(archived: &[pb::ArchivedBan], rows: &[Key]) -> (Vec<Key>, Vec<Key>) {
    let mut counts: HashMap<Key, usize> = HashMap::new();
    for ban in archived {
        *counts.entry((ban.jail.clone(), ban.ip.clone(), ban.banned_at.as_ref().unwrap().seconds)).or_default() += 1;
    }
    let lost = rows.iter().filter(|k| !counts.contains_key(*k)).cloned().collect();
    let twice = counts.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k).collect();
    (lost, twice)
}

/// Writes failed logins for a new address into `alpha.log` every 250 ms
/// (three each: a ban) until `stop`; returns how many addresses.
fn keep_banning(f2b: Arc<Fail2banServer>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            f2b.fail_logins("alpha", &format!("100.64.{}.{}", n / 250, n % 250 + 1), 3);
            n += 1;
            std::thread::sleep(Duration::from_millis(250));
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ban_is_archived_once_with_its_host_across_kills_and_restarts() {
    let f2b = Arc::new(Fail2banServer::start());
    // A backlog the host had before its agent ran: delivery takes a while,
    // so the kills below land mid-delivery.
    add_backlog(&f2b.database(), "beta", 30_000, 1).await;
    let schema = PgSchema::create("fleet_events").await;
    let url = schema.url();
    let agent_listen = format!("127.0.0.1:{}", free_port());
    let start_control = || ControlService::start(&["--database-url", &url, "--agent-listen", &agent_listen]);
    let mut control = start_control();
    let endpoint = agent_endpoint(&control);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let token = token_file(&control, dir.path()).await;
    let socket = f2b.socket();
    let agent_args = ["--history-interval", "300ms"];
    let mut agent = AgentProcess::start(
        &endpoint,
        &state,
        &socket,
        &["--enroll-token-file", token.to_str().unwrap(), "--history-interval", "300ms"],
    );
    agent.wait_attached(1).await;
    let host = host_ids(&control).await.remove(0);

    // Log lines make bans all along.
    let stop = Arc::new(AtomicBool::new(false));
    let banning = keep_banning(f2b.clone(), stop.clone());

    // kill -9 the agent mid-delivery, and start it again.
    bangui_e2e::eventually(120, "a first part of the backlog archived", || async {
        archived_count(&control, &host).await >= 5_000
    })
    .await;
    let before_kill = archived_count(&control, &host).await;
    agent.kill9();
    println!("agent killed with {before_kill} events archived");
    agent = AgentProcess::start(&endpoint, &state, &socket, &agent_args);
    agent.wait_attached(1).await;

    // kill -9 the control-service mid-delivery, and start it again on the
    // same database and agent port.
    bangui_e2e::eventually(120, "more of the backlog archived", || async {
        archived_count(&control, &host).await >= 15_000
    })
    .await;
    control.kill9();
    println!("control-service killed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    control = start_control();
    agent.wait_attached(2).await;

    // And the agent once more, right after it attached again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.kill9();
    agent = AgentProcess::start(&endpoint, &state, &socket, &agent_args);
    agent.wait_attached(1).await;

    // Bans stop; fail2ban reads the last lines; everything arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let addresses = banning.join().unwrap();
    let banned_by_logs = bangui_e2e::eventually(30, "fail2ban banned every address written", || async {
        f2b.banned("alpha").len() >= addresses
    });
    banned_by_logs.await;
    let rows = fail2ban_rows(&f2b.database()).await;
    assert!(rows.len() >= 30_000 + addresses, "{} rows for {addresses} addresses", rows.len());
    let started = Instant::now();
    bangui_e2e::eventually(180, "the archive holds every row of fail2ban's database", || async {
        archived_count(&control, &host).await >= rows.len() as u64
    })
    .await;
    // A moment for anything that would arrive twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let archived = control.archive(&host).await;
    let (lost, twice) = compare(&archived, &rows);
    println!(
        "fail2ban rows {}, archived {} (host {host}), lost {}, twice {}; {addresses} bans from log lines; \
         the rest arrived {:?} after the bans stopped",
        rows.len(),
        archived.len(),
        lost.len(),
        twice.len(),
        started.elapsed()
    );
    assert!(lost.is_empty(), "lost: {:?}", &lost[..lost.len().min(10)]);
    assert!(twice.is_empty(), "twice: {:?}", &twice[..twice.len().min(10)]);
    assert_eq!(archived.len(), rows.len());
    assert!(archived.iter().all(|b| b.host == host && b.origin == "fail2ban"));
    // Log lines arrive with the ban.
    let from_logs = archived.iter().find(|b| b.ip.starts_with("100.64.")).expect("a ban from the log");
    assert!(from_logs.matches.iter().any(|l| l.contains("auth failure")), "{from_logs:?}");
    // The outbox is empty once everything is acknowledged.
    bangui_e2e::eventually(10, "the outbox emptied", || async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(state.join("outbox.db")).read_only(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await.unwrap();
        pool.close().await;
        left == 0
    })
    .await;
    // GetIpHistory says which host banned an address.
    let mut history = HistoryServiceClient::new(control.authed().await);
    let ip = history
        .get_ip_history(pb::GetIpHistoryRequest { ip: from_logs.ip.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ip.hosts, std::slice::from_ref(&host));
    // A host filter that is not a host id nor `local` names its field.
    let bad = history
        .list_bans(pb::ListBansRequest {
            filter: Some(pb::HistoryFilter { host: "web-1".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("filter.host"), "{bad:?}");
}

/// A hand-made agent: enrolled, attached with a Hello.
struct RawAgent {
    sender: tokio::sync::mpsc::Sender<agent_pb::AttachRequest>,
    replies: tonic::Streaming<agent_pb::AttachResponse>,
    welcome: agent_pb::Welcome,
}

async fn raw_attach(endpoint: &str, host_id: &str, credential: &str) -> RawAgent {
    let mut client = AgentServiceClient::connect(endpoint.to_owned()).await.unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let hello = agent_pb::Hello {
        host_id: host_id.into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        instance: format!("raw-{}", rand::random::<u64>()),
        fail2ban_version: "1.1.0".into(),
        jails: vec!["sshd".into()],
        ..Default::default()
    };
    sender.send(agent_pb::AttachRequest { body: Some(attach_request::Body::Hello(hello)) }).await.unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(receiver));
    request.metadata_mut().insert("authorization", format!("Bearer {credential}").parse().unwrap());
    let mut replies = client.attach(request).await.unwrap().into_inner();
    let welcome = match replies.message().await.unwrap().and_then(|m| m.body) {
        Some(attach_response::Body::Welcome(welcome)) => welcome,
        other => panic!("no Welcome: {other:?}"),
    };
    RawAgent { sender, replies, welcome }
}

fn event(sequence: u64) -> agent_pb::Event {
    agent_pb::Event {
        sequence,
        jail: "sshd".into(),
        ip: format!("203.0.113.{sequence}"),
        banned_at: 1_800_000_000 + sequence as i64,
        ban_seconds: 600,
        ban_count: 1,
        failures: 3,
        matches: vec!["auth failure".into()],
        unreadable: String::new(),
    }
}

impl RawAgent {
    async fn send(&self, sequences: std::ops::RangeInclusive<u64>) {
        let events = agent_pb::Events { events: sequences.map(event).collect() };
        self.sender.send(agent_pb::AttachRequest { body: Some(attach_request::Body::Events(events)) }).await.unwrap();
    }

    async fn ack(&mut self) -> Result<u64, tonic::Status> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.replies.message()).await.expect("an answer") {
                Ok(Some(agent_pb::AttachResponse { body: Some(attach_response::Body::Ack(ack)) })) => {
                    return Ok(ack.through);
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(tonic::Status::cancelled("the stream ended")),
                Err(status) => return Err(status),
            }
        }
    }
}

async fn replay_and_gap(control: &ControlService) {
    let endpoint = agent_endpoint(control);
    let host_id = format!("4d2f0c1e-0000-4000-8000-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let mut agents = AgentServiceClient::connect(endpoint.clone()).await.unwrap();
    let enrolled = agents
        .enroll(agent_pb::EnrollRequest {
            token: enrollment_token(control).await,
            host_id: host_id.clone(),
            host_name: "raw".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut raw = raw_attach(&endpoint, &host_id, &enrolled.credential).await;
    assert_eq!(raw.welcome.last_sequence, 0);
    raw.send(1..=3).await;
    assert_eq!(raw.ack().await.unwrap(), 3);
    // Replayed, and overlapping: stored once.
    raw.send(1..=3).await;
    assert_eq!(raw.ack().await.unwrap(), 3);
    raw.send(2..=5).await;
    assert_eq!(raw.ack().await.unwrap(), 5);
    assert_eq!(control.archive(&host_id).await.len(), 5);
    // A gap: refused, the stream ends, nothing stored.
    raw.send(7..=8).await;
    let refused = raw.ack().await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("resend from 6"), "{refused:?}");
    drop(raw);
    assert_eq!(control.archive(&host_id).await.len(), 5);
    // Attached again: Welcome says where to resume.
    let mut again = raw_attach(&endpoint, &host_id, &enrolled.credential).await;
    assert_eq!(again.welcome.last_sequence, 5);
    again.send(6..=8).await;
    assert_eq!(again.ack().await.unwrap(), 8);
    let archived = control.archive(&host_id).await;
    let ips: HashSet<&str> = archived.iter().map(|b| b.ip.as_str()).collect();
    assert_eq!((archived.len(), ips.len()), (8, 8));
    // A batch out of bounds is INVALID_ARGUMENT naming the field.
    let bad = agent_pb::Events { events: vec![agent_pb::Event { jail: "j".repeat(300), ..event(9) }] };
    again.sender.send(agent_pb::AttachRequest { body: Some(attach_request::Body::Events(bad)) }).await.unwrap();
    let invalid = again.ack().await.unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(invalid.message().contains("events.events.jail") || format!("{invalid:?}").contains("events.events.jail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_is_stored_once_and_a_gap_is_refused_on_sqlite() {
    let control = ControlService::start(&[]);
    replay_and_gap(&control).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_is_stored_once_and_a_gap_is_refused_on_postgres() {
    let schema = PgSchema::create("fleet_events_raw").await;
    let control = ControlService::start(&["--database-url", &schema.url()]);
    replay_and_gap(&control).await;
}

/// BENCHMARKS.md: a day's backlog of one host, 100 000 events, delivered
/// to a control-service on PostgreSQL; peak RSS of both processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_days_backlog_of_100_000_events_is_delivered_in_bounded_memory() {
    const EVENTS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let f2b_db = dir.path().join("fail2ban.sqlite3");
    add_backlog(&f2b_db, "sshd", EVENTS, 2).await;
    let schema = PgSchema::create("fleet_backlog").await;
    let control = ControlService::start(&["--database-url", &schema.url()]);
    let token = token_file(&control, dir.path()).await;
    let started = Instant::now();
    let agent = AgentProcess::start(
        &agent_endpoint(&control),
        &dir.path().join("state"),
        &dir.path().join("no-fail2ban.sock"),
        &[
            "--enroll-token-file",
            token.to_str().unwrap(),
            "--fail2ban-db",
            f2b_db.to_str().unwrap(),
            "--history-interval",
            "1s",
        ],
    );
    agent.wait_attached(1).await;
    let host = host_ids(&control).await.remove(0);
    bangui_e2e::eventually(600, "100 000 events archived", || async {
        archived_count(&control, &host).await >= EVENTS as u64
    })
    .await;
    let took = started.elapsed();
    let (agent_kib, control_kib) = (agent.peak_rss_kib(), control.peak_rss_kib());
    println!(
        "backlog of {EVENTS} events delivered in {took:?} ({:.0} events/s); peak RSS: fail2ban-agent {:.1} MiB, \
         control-service {:.1} MiB",
        EVENTS as f64 / took.as_secs_f64(),
        agent_kib as f64 / 1024.0,
        control_kib as f64 / 1024.0
    );
    assert_eq!(archived_count(&control, &host).await, EVENTS as u64, "each once");
    assert!(agent_kib <= 64 * 1024, "fail2ban-agent peaked at {agent_kib} KiB");
    assert!(control_kib <= 128 * 1024, "control-service peaked at {control_kib} KiB");
}
