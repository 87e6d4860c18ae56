//! The fleet as real processes under chaos (issue 21, Show): 5 real
//! fail2ban-servers (each its own directory, socket and database), 5 real
//! `fail2ban-agent`s and 3 control-service replicas on PostgreSQL.
//!
//! * Chaos: bans from log lines on every host are archived once with their
//!   host; then 30 cycles of kill -9 and SIGTERM of random agents and
//!   replicas, and one restart of PostgreSQL (a cluster of the test's own),
//!   while bans keep coming and BanIp commands go to random hosts through
//!   random replicas: the archive equals the union of the five fail2ban
//!   databases (0 lost, 0 twice), every command answered OK was applied
//!   once, and none was applied twice.
//! * Rolling update: each replica in turn is stopped (SIGTERM) and
//!   replaced on the same addresses; every agent it held is attached to
//!   another replica within 2 s; commands and bans go on all along: no
//!   command lost or applied twice, no event lost.
//!
//! "Applied" is what the host's fail2ban saw: its log (at DEBUG) says
//! `[jail] Ban IP` for a new ban and `[jail] IP already banned` for a ban
//! command it got again. Every command bans an address of its own, so an
//! address with two such lines is a command applied twice.
//!
//! The random choices come from a seed printed at the start; run again
//! with `BANGUI_CHAOS_SEED=<seed>` to make the same choices.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bangui_e2e::{
    Authed, Bearer, ControlService, PgSchema,
    agent::AgentProcess,
    fail2ban::Fail2banServer,
    pg_cluster::{PgCluster, StopMode},
};
use bangui_proto::control::v1::{
    self as pb, history_service_client::HistoryServiceClient, host_service_client::HostServiceClient,
    jail_service_client::JailServiceClient,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::Code;

const HOSTS: usize = 5;
const REPLICAS: usize = 3;
/// The jail log lines ban in; commands ban in the other.
const LOG_JAIL: &str = "alpha";
const COMMAND_JAIL: &str = "beta";

/// A ban as fail2ban's database and the archive both have it.
type Key = (String, String, i64);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The seed of this run: `BANGUI_CHAOS_SEED`, else a random one.
fn seed() -> u64 {
    let seed = std::env::var("BANGUI_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (replay with BANGUI_CHAOS_SEED={seed})");
    seed
}

/// A control-service replica at fixed addresses, so its replacement
/// starts on the same flags and the agents' endpoint lists stay right.
struct Replica {
    listen: String,
    agent_listen: String,
    database_url: String,
    process: Option<ControlService>,
}

impl Replica {
    fn new(database_url: &str) -> Self {
        Self {
            listen: format!("127.0.0.1:{}", free_port()),
            agent_listen: format!("127.0.0.1:{}", free_port()),
            database_url: database_url.to_owned(),
            process: None,
        }
    }

    /// Starts (or starts again) the replica, off the async runtime: the
    /// test's clients keep running while it comes up.
    async fn start(&mut self) {
        assert!(self.process.is_none(), "already running");
        let (listen, agent, url) = (self.listen.clone(), self.agent_listen.clone(), self.database_url.clone());
        let process = tokio::task::spawn_blocking(move || {
            ControlService::start(&[
                "--database-url",
                &url,
                "--local-fail2ban",
                "false",
                "--listen",
                &listen,
                "--agent-listen",
                &agent,
            ])
        })
        .await
        .unwrap();
        self.process = Some(process);
    }

    fn control(&self) -> &ControlService {
        self.process.as_ref().expect("the replica runs")
    }

    /// The agent port, as an agent's endpoint.
    fn endpoint(&self) -> String {
        format!("http://{}", self.agent_listen)
    }

    fn kill9(&mut self) {
        self.process.take().expect("the replica runs").kill9();
    }

    /// SIGTERM, and the exit status once it has drained.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.take().expect("the replica runs").shutdown().await
    }

    /// A JailService client of this replica's address that sends `token`;
    /// it connects when used, and again after the replica was replaced.
    fn jails(&self, token: &str) -> JailServiceClient<Authed> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.listen))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let bearer = Bearer(format!("Bearer {token}").parse().unwrap());
        JailServiceClient::new(
            tower::ServiceBuilder::new()
                .layer(tonic::service::interceptor::InterceptorLayer::new(bearer))
                .service(channel),
        )
    }
}

/// One host: its fail2ban-server and its agent.
struct Host {
    name: String,
    id: String,
    f2b: Arc<Fail2banServer>,
    state: PathBuf,
    /// Every replica's agent port, this host's first one first.
    endpoints: String,
    agent: Option<AgentProcess>,
}

impl Host {
    fn start_agent(&mut self, extra: &[&str]) {
        assert!(self.agent.is_none(), "the agent runs");
        let mut args = vec!["--host-name", &self.name, "--history-interval", "300ms"];
        args.extend_from_slice(extra);
        self.agent = Some(AgentProcess::start(&self.endpoints, &self.state, &self.f2b.socket(), &args));
    }

    fn agent(&self) -> &AgentProcess {
        self.agent.as_ref().expect("the agent runs")
    }

    /// fail2ban's log lines for `ip` in `jail`: how many times a ban of it
    /// reached fail2ban (a new ban, or one it already had).
    fn bans_applied(log: &str, jail: &str, ip: &str) -> usize {
        let new = format!("[{jail}] Ban {ip}");
        let again = format!("[{jail}] {ip} already banned");
        log.lines().filter(|l| l.trim_end().ends_with(&new) || l.contains(&again)).count()
    }
}

/// Replicas on one database, hosts with their agents, a session token.
struct Fleet {
    replicas: Vec<Replica>,
    hosts: Vec<Host>,
    token: String,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts `REPLICAS` replicas on `database_url`, `HOSTS` fail2ban-servers
    /// (logging at DEBUG) and enrolls an agent for each; agent `i` knows
    /// every replica, replica `i % REPLICAS` first.
    async fn start(database_url: &str) -> Self {
        let mut replicas: Vec<Replica> = (0..REPLICAS).map(|_| Replica::new(database_url)).collect();
        for replica in &mut replicas {
            replica.start().await;
        }
        let token = replicas[0].control().token().await;
        let servers: Vec<Fail2banServer> = std::thread::scope(|scope| {
            let started: Vec<_> = (0..HOSTS).map(|_| scope.spawn(Fail2banServer::start)).collect();
            started.into_iter().map(|s| s.join().unwrap()).collect()
        });
        let dir = tempfile::tempdir().unwrap();
        let mut hosts = Vec::new();
        for (i, f2b) in servers.into_iter().enumerate() {
            f2b.client_ok(&["set", "loglevel", "DEBUG"]);
            let endpoints: Vec<String> = (0..REPLICAS).map(|k| replicas[(i + k) % REPLICAS].endpoint()).collect();
            let control = replicas[i % REPLICAS].control();
            let mut enroll = HostServiceClient::new(control.authed().await);
            let name = format!("web-{i}");
            let enrollment = enroll
                .create_enrollment_token(pb::CreateEnrollmentTokenRequest { ttl_seconds: 600, note: name.clone() })
                .await
                .unwrap()
                .into_inner();
            let token_file = dir.path().join(format!("{name}.token"));
            std::fs::write(&token_file, enrollment.token).unwrap();
            let mut host = Host {
                name,
                id: String::new(),
                f2b: Arc::new(f2b),
                state: dir.path().join(format!("state-{i}")),
                endpoints: endpoints.join(","),
                agent: None,
            };
            host.start_agent(&["--enroll-token-file", token_file.to_str().unwrap()]);
            hosts.push(host);
        }
        for host in &hosts {
            host.agent().wait_attached(1).await;
        }
        let listed = HostServiceClient::new(replicas[0].control().authed().await)
            .list_hosts(pb::ListHostsRequest {})
            .await
            .unwrap()
            .into_inner()
            .hosts;
        for host in &mut hosts {
            host.id = listed.iter().find(|h| h.name == host.name).expect("enrolled").id.clone();
        }
        Self { replicas, hosts, token, _dir: dir }
    }

    /// A replica that runs.
    fn any_control(&self) -> &ControlService {
        self.replicas.iter().find_map(|r| r.process.as_ref()).expect("a replica runs")
    }

    /// How many bans of `host` are archived (one aggregate query).
    async fn archived_count(&self, host: &str) -> u64 {
        let mut history = HistoryServiceClient::new(self.any_control().authed().await);
        let filter = pb::HistoryFilter { window: pb::Window::All as i32, host: host.into(), ..Default::default() };
        let jails = history.bans_by_jail(pb::BansByJailRequest { filter: Some(filter) }).await;
        jails.map_or(0, |r| r.into_inner().jails.iter().map(|j| j.bans).sum())
    }

    /// Waits until fail2ban banned what was written into each host's log
    /// (`written[h]` addresses), then until each host's archive holds as
    /// many bans as its database, then compares them row by row; returns
    /// the rows per host and prints the counts.
    async fn compare_all(&self, written: &[usize], within: u64) -> Vec<Vec<Key>> {
        for (host, &n) in self.hosts.iter().zip(written) {
            let f2b = host.f2b.clone();
            bangui_e2e::eventually(60, &format!("{}'s fail2ban banned the {n} addresses written", host.name), || {
                let f2b = f2b.clone();
                async move { tokio::task::spawn_blocking(move || f2b.banned(LOG_JAIL).len()).await.unwrap() >= n }
            })
            .await;
        }
        let mut all_rows = Vec::new();
        let started = Instant::now();
        for host in &self.hosts {
            let rows = fail2ban_rows(&host.f2b.database()).await;
            let what = format!("{}'s archive holds every row of its fail2ban database ({})", host.name, rows.len());
            bangui_e2e::eventually(within, &what, || async {
                self.archived_count(&host.id).await >= rows.len() as u64
            })
            .await;
            all_rows.push(rows);
        }
        println!("delivery drained {:?} after the bans stopped", started.elapsed());
        // A moment for anything that would arrive twice.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (mut total_rows, mut total_archived) = (0, 0);
        for (host, rows) in self.hosts.iter().zip(&all_rows) {
            let archived = self.any_control().archive(&host.id).await;
            let diff = compare(&archived, rows);
            println!(
                "{} ({}): fail2ban rows {}, archived {}, lost {}, twice {}, not in fail2ban {}, \
                 API bans archived with the time the call saw (±1 s) {}",
                host.name,
                host.id,
                rows.len(),
                archived.len(),
                diff.lost.len(),
                diff.twice.len(),
                diff.extra.len(),
                diff.approximate
            );
            assert!(diff.lost.is_empty(), "{} lost: {:?}", host.name, &diff.lost[..diff.lost.len().min(10)]);
            assert!(diff.twice.is_empty(), "{} twice: {:?}", host.name, &diff.twice[..diff.twice.len().min(10)]);
            assert!(
                diff.extra.is_empty(),
                "{} not in fail2ban: {:?}",
                host.name,
                &diff.extra[..diff.extra.len().min(10)]
            );
            assert_eq!(archived.len(), rows.len(), "{}", host.name);
            assert!(archived.iter().all(|b| b.host == host.id), "{}: a ban archived with another host", host.name);
            total_rows += rows.len();
            total_archived += archived.len();
        }
        println!("all hosts: fail2ban rows {total_rows}, archived {total_archived}: 0 lost, 0 twice");
        all_rows
    }

    /// Every agent's outbox is empty (all acknowledged).
    async fn outboxes_empty(&self) {
        for host in &self.hosts {
            let path = host.state.join("outbox.db");
            bangui_e2e::eventually(15, &format!("{}'s outbox emptied", host.name), || async {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).read_only(true);
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await.unwrap();
                pool.close().await;
                left == 0
            })
            .await;
        }
    }
}

/// Every row of fail2ban's `bans` table.
async fn fail2ban_rows(path: &Path) -> Vec<Key> {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows = sqlx::query_as("SELECT jail, ip, timeofban FROM bans").fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows
}

/// The archive of a host against its fail2ban database.
#[derive(Debug, Default)]
struct Diff {
    /// In fail2ban's database, not archived.
    lost: Vec<Key>,
    /// Archived more than once.
    twice: Vec<Key>,
    /// Archived, not in fail2ban's database.
    extra: Vec<Key>,
    /// Bans made through the API archived with the time the call saw,
    /// within a second of fail2ban's row (the fallback when fail2ban's row
    /// cannot be read back in time, `Fail2ban::ban_timed`); paired.
    approximate: usize,
}

fn compare(archived: &[pb::ArchivedBan], rows: &[Key]) -> Diff {
    let mut counts: HashMap<Key, usize> = HashMap::new();
    let mut manual: HashSet<Key> = HashSet::new();
    for ban in archived {
        let key = (ban.jail.clone(), ban.ip.clone(), ban.banned_at.as_ref().unwrap().seconds);
        if ban.origin == "manual" {
            manual.insert(key.clone());
        }
        *counts.entry(key).or_default() += 1;
    }
    let mut in_db: HashMap<Key, usize> = HashMap::new();
    for row in rows {
        *in_db.entry(row.clone()).or_default() += 1;
    }
    let mut diff = Diff {
        twice: counts
            .iter()
            .filter(|(k, n)| **n > in_db.get(*k).copied().unwrap_or(1))
            .map(|(k, _)| k.clone())
            .collect(),
        ..Diff::default()
    };
    let mut lost: Vec<Key> = in_db.keys().filter(|k| !counts.contains_key(*k)).cloned().collect();
    let extra: Vec<Key> = counts.keys().filter(|k| !in_db.contains_key(*k)).cloned().collect();
    for key in extra {
        let near = manual
            .contains(&key)
            .then(|| lost.iter().position(|(jail, ip, at)| *jail == key.0 && *ip == key.1 && (at - key.2).abs() <= 1));
        match near.flatten() {
            Some(i) => {
                lost.swap_remove(i);
                diff.approximate += 1;
            }
            None => diff.extra.push(key),
        }
    }
    diff.lost = lost;
    diff
}

/// Writes failed logins for a new address into every host's log in turn
/// (three each: a ban), a round every `every`, until `stop`; returns how
/// many addresses each host got.
fn keep_banning(
    hosts: Vec<Arc<Fail2banServer>>,
    every: Duration,
    stop: Arc<AtomicBool>,
    first: usize,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = first;
        while !stop.load(Ordering::SeqCst) {
            for (h, f2b) in hosts.iter().enumerate() {
                f2b.fail_logins(LOG_JAIL, &log_ip(h, n), 3);
            }
            n += 1;
            std::thread::sleep(every);
        }
        n
    })
}

fn log_ip(host: usize, n: usize) -> String {
    format!("10.{host}.{}.{}", n / 250, n % 250 + 1)
}

fn command_ip(host: usize, n: usize) -> String {
    format!("172.{}.{}.{}", 16 + host, n / 250, n % 250 + 1)
}

/// One BanIp a test sent, and what it heard.
#[derive(Debug, Clone)]
struct Sent {
    host: usize,
    ip: String,
    replica: usize,
    /// `Ok(newly_banned)`, or the status.
    answer: Result<bool, (Code, String)>,
    took: Duration,
}

/// Sends BanIp commands to random hosts through random replicas (those
/// `live` says take calls) until `stop`, `senders` at once, each with
/// `deadline`; every command bans an address of its own.
struct Commands {
    sent: Arc<Mutex<Vec<Sent>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Commands {
    fn start(
        fleet: &Fleet,
        seed: u64,
        senders: usize,
        deadline: Duration,
        live: Arc<Mutex<Vec<bool>>>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let clients: Vec<JailServiceClient<Authed>> = fleet.replicas.iter().map(|r| r.jails(&fleet.token)).collect();
        let names: Vec<String> = fleet.hosts.iter().map(|h| h.name.clone()).collect();
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let next_ip = Arc::new(Mutex::new(vec![0usize; names.len()]));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..senders)
            .map(|_| {
                let (clients, names, rng, next_ip, sent, live, stop) = (
                    clients.clone(),
                    names.clone(),
                    rng.clone(),
                    next_ip.clone(),
                    sent.clone(),
                    live.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let (host, replica, pause) = {
                            let mut rng = rng.lock().unwrap();
                            let up: Vec<usize> =
                                live.lock().unwrap().iter().enumerate().filter(|(_, l)| **l).map(|(i, _)| i).collect();
                            let replica = up[rng.random_range(0..up.len())];
                            (rng.random_range(0..names.len()), replica, rng.random_range(30..150))
                        };
                        let ip = {
                            let mut next = next_ip.lock().unwrap();
                            next[host] += 1;
                            command_ip(host, next[host])
                        };
                        let mut request = tonic::Request::new(pb::BanIpRequest {
                            jail: COMMAND_JAIL.into(),
                            ip: ip.clone(),
                            host: names[host].clone(),
                            ..Default::default()
                        });
                        request.set_timeout(deadline);
                        let asked = Instant::now();
                        let mut client = clients[replica].clone();
                        let answer = match tokio::time::timeout(deadline * 2, client.ban_ip(request)).await {
                            Ok(Ok(reply)) => Ok(reply.into_inner().newly_banned),
                            Ok(Err(status)) => Err((status.code(), status.message().to_owned())),
                            Err(_) => Err((Code::Unknown, format!("no answer within {:?}", deadline * 2))),
                        };
                        sent.lock().unwrap().push(Sent { host, ip, replica, answer, took: asked.elapsed() });
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                })
            })
            .collect();
        Self { sent, tasks }
    }

    async fn stop(self) -> Vec<Sent> {
        for task in self.tasks {
            task.await.unwrap();
        }
        self.sent.lock().unwrap().clone()
    }
}

/// What became of the commands, from each host's fail2ban log.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    /// Not answered OK, and fail2ban saw it (once).
    applied_anyway: usize,
    /// Not answered OK, and fail2ban never saw it.
    not_applied: usize,
    /// Answers by status (`OK`, `Unavailable`, `transport` for a
    /// connection cut under the call: a replica killed).
    outcomes: BTreeMap<String, usize>,
    /// What must not be: applied twice, OK but not applied once, an answer
    /// other than OK, UNAVAILABLE or a cut connection.
    wrong: Vec<String>,
}

fn tally(fleet: &Fleet, sent: &[Sent]) -> Tally {
    let logs: Vec<String> = fleet.hosts.iter().map(|h| h.f2b.log()).collect();
    let banned: Vec<HashSet<String>> =
        fleet.hosts.iter().map(|h| h.f2b.banned(COMMAND_JAIL).into_iter().collect()).collect();
    let mut tally = Tally::default();
    for s in sent {
        let applied = Host::bans_applied(&logs[s.host], COMMAND_JAIL, &s.ip);
        if applied > 1 {
            tally.wrong.push(format!("applied {applied} times: {s:?}"));
        }
        match &s.answer {
            Ok(newly) => {
                tally.ok += 1;
                *tally.outcomes.entry("OK".into()).or_default() += 1;
                if applied != 1 || !*newly || !banned[s.host].contains(&s.ip) {
                    tally.wrong.push(format!(
                        "answered OK (newly banned: {newly}), fail2ban saw it {applied} times, banned now: {}: {s:?}",
                        banned[s.host].contains(&s.ip)
                    ));
                }
            }
            Err((code, message)) => {
                let transport = *code == Code::Unknown && message.contains("transport error");
                let label = if transport { "transport".to_owned() } else { format!("{code:?}") };
                *tally.outcomes.entry(label).or_default() += 1;
                if !(transport || matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled)) {
                    tally.wrong.push(format!("answered otherwise than OK or UNAVAILABLE: {s:?}"));
                }
                if applied >= 1 {
                    tally.applied_anyway += 1;
                } else {
                    tally.not_applied += 1;
                }
            }
        }
    }
    tally
}

/// Prints what became of the commands and asserts none went wrong.
fn check_commands(sent: &[Sent], fleet: &Fleet) -> Tally {
    let tally = tally(fleet, sent);
    let mut took: Vec<Duration> = sent.iter().filter(|s| s.answer.is_ok()).map(|s| s.took).collect();
    took.sort();
    let p = |q: f64| took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1))).copied();
    println!(
        "commands: {} sent, {} OK, not OK {} ({} applied once anyway, {} not applied), by answer {:?}; \
         OK took p50 {:?} p99 {:?} max {:?}; wrong: {}",
        sent.len(),
        tally.ok,
        tally.applied_anyway + tally.not_applied,
        tally.applied_anyway,
        tally.not_applied,
        tally.outcomes,
        p(0.5),
        p(0.99),
        took.last(),
        tally.wrong.len()
    );
    for s in sent.iter().filter(|s| s.answer.is_err()).take(20) {
        println!("  not OK: {} on web-{} via replica {} after {:?}: {:?}", s.ip, s.host, s.replica, s.took, s.answer);
    }
    assert!(tally.wrong.is_empty(), "commands gone wrong:\n{}", tally.wrong.join("\n"));
    tally
}

/// One chaos cycle's action.
#[derive(Debug, Clone, Copy)]
enum Action {
    KillAgent(usize),
    StopAgent(usize),
    KillReplica(usize),
    StopReplica(usize),
    RestartPostgres,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_equals_every_hosts_fail2ban_across_kills_and_a_postgres_restart() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let pg = Arc::new(tokio::task::spawn_blocking(PgCluster::start).await.unwrap());
    let setup = Instant::now();
    let mut fleet = Fleet::start(&pg.url()).await;
    println!("{HOSTS} hosts, {REPLICAS} replicas up in {:?}", setup.elapsed());
    let servers: Vec<Arc<Fail2banServer>> = fleet.hosts.iter().map(|h| h.f2b.clone()).collect();

    // Log lines on every host make bans; each is archived once, with its host.
    for n in 0..10 {
        for (h, f2b) in servers.iter().enumerate() {
            f2b.fail_logins(LOG_JAIL, &log_ip(h, n), 3);
        }
    }
    fleet.compare_all(&[10; HOSTS], 60).await;

    // The count of applications sees a ban sent twice: fail2ban logs the
    // second as "already banned".
    let mut jails = fleet.replicas[1].jails(&fleet.token);
    let twice = pb::BanIpRequest {
        jail: COMMAND_JAIL.into(),
        ip: "192.0.2.200".into(),
        host: fleet.hosts[0].name.clone(),
        ..Default::default()
    };
    assert!(jails.ban_ip(twice.clone()).await.unwrap().into_inner().newly_banned);
    assert!(!jails.ban_ip(twice).await.unwrap().into_inner().newly_banned);
    bangui_e2e::eventually(5, "fail2ban's log shows the ban twice", || async {
        Host::bans_applied(&fleet.hosts[0].f2b.log(), COMMAND_JAIL, "192.0.2.200") == 2
    })
    .await;

    // Chaos, while bans keep coming and commands keep being sent.
    let stop = Arc::new(AtomicBool::new(false));
    let banning = keep_banning(servers.clone(), Duration::from_millis(250), stop.clone(), 10);
    // Callers choose among the replicas that run (a load balancer's view).
    let live = Arc::new(Mutex::new(vec![true; REPLICAS]));
    let commands = Commands::start(&fleet, seed ^ 0x5eed, 2, Duration::from_secs(3), live.clone(), stop.clone());
    let cycles = 30;
    let postgres_at = rng.random_range(5..cycles - 5);
    let chaos = Instant::now();
    let mut done = Vec::new();
    for cycle in 0..cycles {
        let action = if cycle == postgres_at {
            Action::RestartPostgres
        } else {
            match rng.random_range(0..10) {
                0..3 => Action::KillAgent(rng.random_range(0..HOSTS)),
                3..5 => Action::StopAgent(rng.random_range(0..HOSTS)),
                5..8 => Action::KillReplica(rng.random_range(0..REPLICAS)),
                _ => Action::StopReplica(rng.random_range(0..REPLICAS)),
            }
        };
        let pause = Duration::from_millis(rng.random_range(200..1200));
        let began = Instant::now();
        match action {
            Action::KillAgent(h) => {
                fleet.hosts[h].agent.take().unwrap().kill9();
                fleet.hosts[h].start_agent(&[]);
            }
            Action::StopAgent(h) => {
                let agent = fleet.hosts[h].agent.take().unwrap();
                let status = tokio::task::spawn_blocking(move || agent.terminate()).await.unwrap();
                assert!(status.success(), "the agent exits cleanly on SIGTERM: {status:?}");
                fleet.hosts[h].start_agent(&[]);
            }
            Action::KillReplica(r) => {
                fleet.replicas[r].kill9();
                live.lock().unwrap()[r] = false;
                fleet.replicas[r].start().await;
                live.lock().unwrap()[r] = true;
            }
            Action::StopReplica(r) => {
                live.lock().unwrap()[r] = false;
                let status = fleet.replicas[r].terminate().await;
                assert!(status.success(), "the replica exits cleanly on SIGTERM: {status:?}");
                fleet.replicas[r].start().await;
                live.lock().unwrap()[r] = true;
            }
            Action::RestartPostgres => {
                let pg = pg.clone();
                tokio::task::spawn_blocking(move || {
                    pg.stop(StopMode::Immediate);
                    std::thread::sleep(Duration::from_secs(1));
                    pg.restart();
                })
                .await
                .unwrap();
            }
        }
        println!("cycle {cycle:2}: {action:?} in {:?}, then {pause:?}", began.elapsed());
        done.push(action);
        tokio::time::sleep(pause).await;
    }
    println!("{cycles} cycles in {:?}", chaos.elapsed());
    // Bans and commands stop; every agent attaches again and delivers.
    stop.store(true, Ordering::SeqCst);
    let sent = commands.stop().await;
    let written = banning.join().unwrap();
    for host in &fleet.hosts {
        host.agent().wait_for("attached to the control plane", 1, Duration::from_secs(30)).await;
    }
    fleet.compare_all(&[written; HOSTS], 120).await;
    fleet.outboxes_empty().await;
    let tally = check_commands(&sent, &fleet);
    assert!(tally.ok > 0, "some commands went through");
    assert!(done.iter().any(|a| matches!(a, Action::RestartPostgres)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_moves_every_agent_within_2_s_and_loses_nothing() {
    let seed = seed();
    let schema = PgSchema::create("fleet_rolling").await;
    let mut fleet = Fleet::start(&schema.url()).await;
    let servers: Vec<Arc<Fail2banServer>> = fleet.hosts.iter().map(|h| h.f2b.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let banning = keep_banning(servers, Duration::from_millis(250), stop.clone(), 0);
    let live = Arc::new(Mutex::new(vec![true; REPLICAS]));
    let commands = Commands::start(&fleet, seed, 2, Duration::from_secs(5), live.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut moves = Vec::new();
    for r in 0..REPLICAS {
        let endpoint = fleet.replicas[r].endpoint();
        // The agents whose stream is on this replica: their last attach names it.
        let held: Vec<(usize, usize)> = fleet
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                let logs = h.agent().logs();
                let last = logs.iter().rev().find(|l| l.contains("attached to the control plane"));
                last.is_some_and(|l| l.contains(&format!("\"{endpoint}\"")))
            })
            .map(|(i, h)| (i, h.agent().count("attached to the control plane")))
            .collect();
        assert!(!held.is_empty(), "replica {r} holds no agent's stream");
        // Callers stop choosing it (its health turns NOT_SERVING at SIGTERM;
        // a load balancer does the same).
        live.lock().unwrap()[r] = false;
        let process = fleet.replicas[r].process.take().unwrap();
        let sigterm = Instant::now();
        let exited = tokio::spawn(process.shutdown());
        let mut moved: Vec<Option<Duration>> = vec![None; held.len()];
        while moved.iter().any(Option::is_none) {
            for (slot, (h, before)) in moved.iter_mut().zip(&held) {
                if slot.is_none() && fleet.hosts[*h].agent().count("attached to the control plane") > *before {
                    *slot = Some(sigterm.elapsed());
                }
            }
            assert!(sigterm.elapsed() < Duration::from_secs(15), "agents not attached again: {moved:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = exited.await.unwrap();
        let drained = sigterm.elapsed();
        assert!(status.success(), "replica {r} exits cleanly on SIGTERM: {status:?}");
        for ((h, _), took) in held.iter().zip(&moved) {
            println!(
                "replica {r} stopped: {} attached to another replica after {:?}",
                fleet.hosts[*h].name,
                took.unwrap()
            );
            moves.push((r, fleet.hosts[*h].name.clone(), took.unwrap()));
        }
        println!("replica {r} exited {drained:?} after SIGTERM");
        fleet.replicas[r].start().await;
        live.lock().unwrap()[r] = true;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = commands.stop().await;
    let written = banning.join().unwrap();
    fleet.compare_all(&[written; HOSTS], 60).await;
    fleet.outboxes_empty().await;
    let tally = check_commands(&sent, &fleet);
    let slowest = moves.iter().map(|m| m.2).max().unwrap();
    println!("{} moves, slowest {slowest:?}", moves.len());
    assert!(moves.len() >= REPLICAS, "every replica held a stream when it stopped");
    for (r, name, took) in &moves {
        assert!(*took <= Duration::from_secs(2), "{name} took {took:?} to leave replica {r}");
    }
    // No command lost: every one, sent to a replica in service with a 5 s
    // deadline, reached its host (each once) while the replicas rolled.
    assert_eq!(tally.ok, sent.len(), "every command answered OK during the rolling update: {:?}", tally.outcomes);
}
