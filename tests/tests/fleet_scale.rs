//! The fleet at scale (issue 21, Show "Scale"): simulated agents in this
//! one process, each with a fake fail2ban socket of its own that speaks
//! fail2ban's real protocol (testkit's `fake_fail2ban` server, one thread
//! per socket), attached to 3 control-service replicas on PostgreSQL. Each
//! agent enrolls with its own token, attaches to one replica, announces
//! its jails' counters (read from its fake fail2ban, as the real agent
//! does every 10 s), heartbeats every second, runs the commands it is sent
//! against its fake fail2ban (`bangui_fail2ban::command::run`, the real
//! agent's code) and delivers history events in batches of 500 with a
//! window of 4, as the real agent does.
//!
//! Measured and printed: each replica's RSS once every agent is attached
//! and its peak (VmHWM) after the event ingest (asserted ≤ 128 MiB),
//! `ListJails` over every host end to end from **another process** (p50,
//! p99), event ingest with every agent sending at once (events/s into
//! PostgreSQL; every event stored exactly once is asserted), and `BanIp`
//! to random hosts through random replicas (each reaching its host's fake
//! fail2ban).
//!
//! `BANGUI_FLEET_HOSTS` sets the number of agents: 150 by default (the
//! debug suite on a 2-core machine); BENCHMARKS.md has 1 000 on the release
//! build: `BANGUI_BIN_DIR=$CARGO_TARGET_DIR/release BANGUI_FLEET_HOSTS=1000
//! cargo nextest run --release -p bangui-e2e --test fleet_scale --no-capture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::net::UnixListener,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bangui_e2e::{ControlService, PgSchema};
use bangui_fail2ban::{
    Fail2ban, SocketClient, SocketSettings, StartSettings, Unobserved,
    command::{self, Command, Failure},
};
use bangui_proto::{
    agent::v1::{
        self as apb, AttachRequest, AttachResponse, agent_service_client::AgentServiceClient, attach_request,
        attach_response, command_result::Outcome,
    },
    control::v1::{self as pb, host_service_client::HostServiceClient, jail_service_client::JailServiceClient},
};
use bangui_testkit::fake_fail2ban::{self, JailSpec};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, metadata::MetadataValue, transport::Channel};

/// Events each agent delivers in the ingest phase.
const EVENTS_PER_AGENT: u64 = 1_000;
/// Events per batch, and batches unacknowledged, as the real agent sends them.
const BATCH: u64 = 500;
const WINDOW: usize = 4;
/// Attach attempts a busy replica refused (all agents).
static RETRIES: AtomicU64 = AtomicU64::new(0);
/// Streams attached again after one ended (all agents).
static REATTACHED: AtomicU64 = AtomicU64::new(0);
/// ListJails calls the other process makes.
const LIST_CALLS: usize = 200;

fn hosts() -> usize {
    std::env::var("BANGUI_FLEET_HOSTS").ok().and_then(|n| n.parse().ok()).unwrap_or(150)
}

/// A fake fail2ban on a socket of its own, served on threads of its own.
fn fake_fail2ban(dir: &std::path::Path, i: usize) -> Fail2ban {
    let path = dir.join(format!("f2b-{i}.sock"));
    let listener = UnixListener::bind(&path).unwrap();
    let jails = [JailSpec::parse("sshd").unwrap(), JailSpec::parse("nginx-http").unwrap()];
    let server = fake_fail2ban::Server::new(&jails, None);
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || fake_fail2ban::serve(listener, server, false))
        .unwrap();
    let settings = SocketSettings {
        path,
        connect_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(30),
        max_in_flight: 2,
    };
    let start = StartSettings {
        client_binary: PathBuf::from("fail2ban-client"),
        config_dir: None,
        timeout: Duration::from_secs(5),
    };
    Fail2ban::new(SocketClient::new(settings, Arc::new(Unobserved)), start)
}

/// What the fake fail2ban says, as the agent announces it.
async fn jail_states(fail2ban: &Fail2ban) -> (String, Vec<String>, Vec<apb::JailState>) {
    let status = fail2ban.server_status().await.unwrap();
    let states: Vec<apb::JailState> = status
        .jails
        .iter()
        .map(|j| apb::JailState {
            name: j.name.clone(),
            currently_failed: j.currently_failed,
            total_failed: j.total_failed,
            currently_banned: j.currently_banned,
            total_banned: j.total_banned,
        })
        .collect();
    (status.version, states.iter().map(|s| s.name.clone()).collect(), states)
}

/// One history event of agent `agent`.
fn event(agent: usize, sequence: u64) -> apb::Event {
    let n = u32::try_from(agent).unwrap() * 1_000_000 + u32::try_from(sequence).unwrap();
    apb::Event {
        sequence,
        jail: "sshd".into(),
        ip: std::net::Ipv4Addr::from(0x0b00_0000 + n).to_string(),
        banned_at: 1_780_000_000 + i64::try_from(sequence).unwrap(),
        ban_seconds: 600,
        ban_count: 1,
        failures: 5,
        matches: vec![format!("sshd[{sequence}]: Failed password for root from a host port 22")],
        unreadable: String::new(),
    }
}

/// An enrolled simulated agent.
struct Enrolled {
    index: usize,
    host_id: String,
    credential: String,
    endpoint: String,
}

/// Holds one agent's stream until the test ends, as the real agent does:
/// Hello, heartbeats every second (counters re-read every 10 s), commands
/// run against its fake fail2ban, events when `send_events` turns true,
/// from the sequence after Welcome's; a stream that ends (a replica that
/// is busy refuses or ends it) is attached again. `acknowledged` counts
/// the events acknowledged, over every agent.
async fn run_agent(
    agent: Enrolled,
    fail2ban: Fail2ban,
    send_events: watch::Receiver<bool>,
    attached: mpsc::Sender<usize>,
    acknowledged: Arc<AtomicU64>,
) {
    let channel = Channel::from_shared(agent.endpoint.clone()).unwrap().connect().await.unwrap();
    let mut client = AgentServiceClient::new(channel).max_decoding_message_size(8 << 20);
    let mut acked = 0;
    let mut first = true;
    loop {
        let (sender, replies, welcome) = attach(&agent, &fail2ban, &mut client).await;
        // A stream that ended after a batch was stored but before its Ack
        // arrived: Welcome says what is stored.
        if welcome.last_sequence > acked {
            acknowledged.fetch_add(welcome.last_sequence - acked, Ordering::Relaxed);
            acked = welcome.last_sequence;
        }
        if first {
            attached.send(agent.index).await.unwrap();
            first = false;
        } else {
            REATTACHED.fetch_add(1, Ordering::Relaxed);
        }
        let stream = Stream { agent: &agent, fail2ban: &fail2ban, sender, acknowledged: &acknowledged };
        acked = stream.hold(replies, welcome.last_sequence + 1, acked, send_events.clone()).await;
        if acked >= EVENTS_PER_AGENT && send_events.has_changed().is_err() {
            return;
        }
    }
}

/// Opens the stream, retrying (after a short random wait, as the real
/// agent) while the replica is busy: its in-flight cap when a thousand
/// agents attach at once.
async fn attach(
    agent: &Enrolled,
    fail2ban: &Fail2ban,
    client: &mut AgentServiceClient<Channel>,
) -> (mpsc::Sender<AttachRequest>, tonic::Streaming<AttachResponse>, apb::Welcome) {
    let (version, jails, states) = jail_states(fail2ban).await;
    let mut wait = Duration::from_millis(50);
    loop {
        let (sender, receiver) = mpsc::channel::<AttachRequest>(16);
        let hello = apb::Hello {
            host_id: agent.host_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            instance: format!("sim-{}", agent.index),
            fail2ban_version: version.clone(),
            jails: jails.clone(),
            jail_states: states.clone(),
            states_age_ms: 0,
        };
        sender.send(AttachRequest { body: Some(attach_request::Body::Hello(hello)) }).await.unwrap();
        let mut request = Request::new(ReceiverStream::new(receiver));
        let bearer = MetadataValue::try_from(format!("Bearer {}", agent.credential)).unwrap();
        request.metadata_mut().insert("authorization", bearer);
        let refused = match client.attach(request).await {
            Ok(response) => {
                let mut replies = response.into_inner();
                match replies.message().await {
                    Ok(Some(AttachResponse { body: Some(attach_response::Body::Welcome(welcome)) })) => {
                        return (sender, replies, welcome);
                    }
                    other => format!("{other:?}"),
                }
            }
            Err(busy)
                if matches!(
                    busy.code(),
                    tonic::Code::ResourceExhausted | tonic::Code::AlreadyExists | tonic::Code::Unavailable
                ) =>
            {
                // Busy, the previous stream's lease not yet released, or the
                // database slow to answer: the real agent tries again too.
                busy.to_string()
            }
            Err(other) => panic!("attach: {other:?}"),
        };
        RETRIES.fetch_add(1, Ordering::Relaxed);
        let _ = refused;
        let jitter = Duration::from_millis(u64::try_from(agent.index % 50).unwrap());
        tokio::time::sleep(wait + jitter).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// One attached stream of a simulated agent.
struct Stream<'a> {
    agent: &'a Enrolled,
    fail2ban: &'a Fail2ban,
    sender: mpsc::Sender<AttachRequest>,
    acknowledged: &'a AtomicU64,
}

impl Stream<'_> {
    /// Until the stream ends; returns the events acknowledged through.
    async fn hold(
        &self,
        mut replies: tonic::Streaming<AttachResponse>,
        mut next: u64,
        mut acked: u64,
        mut send_events: watch::Receiver<bool>,
    ) -> u64 {
        let sender = &self.sender;
        let window = Arc::new(Semaphore::new(WINDOW));
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let mut read_at = Instant::now();
        let mut said = jail_states(self.fail2ban).await;
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    if read_at.elapsed() > Duration::from_secs(10) {
                        said = jail_states(self.fail2ban).await;
                        read_at = Instant::now();
                    }
                    let heartbeat = apb::Heartbeat {
                        fail2ban_version: said.0.clone(),
                        jails: said.1.clone(),
                        jail_states: said.2.clone(),
                        states_age_ms: u64::try_from(read_at.elapsed().as_millis()).unwrap(),
                        outbox_backlog: EVENTS_PER_AGENT.saturating_sub(acked),
                    };
                    if sender.send(AttachRequest { body: Some(attach_request::Body::Heartbeat(heartbeat)) }).await.is_err() {
                        return acked;
                    }
                }
                permit = window.clone().acquire_owned(), if *send_events.borrow() && next <= EVENTS_PER_AGENT => {
                    permit.unwrap().forget();
                    let last = (next + BATCH - 1).min(EVENTS_PER_AGENT);
                    let events = apb::Events { events: (next..=last).map(|s| event(self.agent.index, s)).collect() };
                    next = last + 1;
                    if sender.send(AttachRequest { body: Some(attach_request::Body::Events(events)) }).await.is_err() {
                        return acked;
                    }
                }
                changed = send_events.changed() => {
                    if changed.is_err() {
                        return acked;
                    }
                }
                reply = replies.message() => match reply {
                    Ok(Some(AttachResponse { body: Some(attach_response::Body::Ack(ack)) })) => {
                        assert!(ack.through < next, "an Ack beyond what was sent");
                        if ack.through > acked {
                            self.acknowledged.fetch_add(ack.through - acked, Ordering::Relaxed);
                            acked = ack.through;
                        }
                        window.add_permits(1);
                    }
                    Ok(Some(AttachResponse { body: Some(attach_response::Body::Command(down)) })) => {
                        let (fail2ban, sender) = (self.fail2ban.clone(), sender.clone());
                        tokio::spawn(async move {
                            let outcome = run_command(&fail2ban, &down.operation).await;
                            let result = apb::CommandResult { id: down.id, outcome: Some(outcome) };
                            let _ = sender.send(AttachRequest { body: Some(attach_request::Body::Result(result)) }).await;
                        });
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return acked,
                },
            }
        }
    }
}

/// A command from the control plane, run as the real agent runs it.
async fn run_command(fail2ban: &Fail2ban, operation: &str) -> Outcome {
    let command = match Command::from_json(operation) {
        Ok(command) => command,
        Err(invalid) => {
            return Outcome::Failure(apb::CommandFailure {
                kind: "invalid".into(),
                message: invalid.reason,
                field: invalid.field.into(),
            });
        }
    };
    match command::run(fail2ban, &command).await.and_then(|r| r.to_json(&command)) {
        Ok(reply) => Outcome::Reply(reply),
        Err(error) => {
            let failure = Failure::from(&error);
            Outcome::Failure(apb::CommandFailure { kind: failure.kind, message: failure.message, field: failure.field })
        }
    }
}

/// `ListJails` over every host, `LIST_CALLS` times, from this process when
/// the scale test runs it as a child: prints `latencies_ms` as JSON.
#[tokio::test]
async fn list_jails_client() {
    let (Ok(addr), Ok(token)) = (std::env::var("FLEET_SCALE_ADDR"), std::env::var("FLEET_SCALE_TOKEN")) else {
        return; // Only as the scale test's client process.
    };
    let expected: usize = std::env::var("FLEET_SCALE_HOSTS").unwrap().parse().unwrap();
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut jails = JailServiceClient::with_interceptor(channel, move |mut r: Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    })
    .max_decoding_message_size(64 << 20);
    let mut latencies = Vec::with_capacity(LIST_CALLS);
    for _ in 0..LIST_CALLS {
        let started = Instant::now();
        let answer = jails.list_jails(pb::ListJailsRequest::default()).await.unwrap().into_inner();
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(answer.hosts.len(), expected);
        assert!(answer.hosts.iter().all(|h| h.outcome.as_ref().unwrap().code == 0 && h.jails.len() == 2));
    }
    println!("latencies_ms {}", serde_json::to_string(&latencies).unwrap());
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_simulated_agents_on_three_replicas() {
    let count = hosts();
    let schema = PgSchema::create("fleet_scale").await;
    let url = schema.url();
    let replicas: Vec<ControlService> =
        (0..3).map(|_| ControlService::start(&["--database-url", &url, "--local-fail2ban", "false"])).collect();
    let sockets = tempfile::tempdir().unwrap();
    let fakes: Vec<Fail2ban> = (0..count).map(|i| fake_fail2ban(sockets.path(), i)).collect();

    // Enrollment: a token each, 8 enrollments at once (the agent port's cap).
    let started = Instant::now();
    let mut hosts_api = HostServiceClient::new(replicas[0].authed().await);
    let mut enrolled = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(8) {
        let mut pending = Vec::new();
        for &i in chunk {
            let token = hosts_api
                .create_enrollment_token(pb::CreateEnrollmentTokenRequest { ttl_seconds: 600, note: String::new() })
                .await
                .unwrap()
                .into_inner()
                .token;
            let endpoint = format!("http://{}", replicas[i % 3].agent_addr().unwrap());
            pending.push(tokio::spawn(async move {
                let mut client = AgentServiceClient::connect(endpoint.clone()).await.unwrap();
                let host_id = format!("00000000-0000-4000-8000-{i:012}");
                let request = apb::EnrollRequest { token, host_id: host_id.clone(), host_name: format!("sim-{i}") };
                let credential = client.enroll(request).await.unwrap().into_inner().credential;
                Enrolled { index: i, host_id, credential, endpoint }
            }));
        }
        for task in pending {
            enrolled.push(task.await.unwrap());
        }
    }
    println!("enrolled {count} hosts in {:?}", started.elapsed());

    // Attach every agent.
    let started = Instant::now();
    let (send_events, events_flag) = watch::channel(false);
    let (attached_tx, mut attached_rx) = mpsc::channel(count);
    let acknowledged = Arc::new(AtomicU64::new(0));
    for (agent, fail2ban) in enrolled.into_iter().zip(fakes.iter().cloned()) {
        tokio::spawn(run_agent(agent, fail2ban, events_flag.clone(), attached_tx.clone(), acknowledged.clone()));
    }
    for _ in 0..count {
        tokio::time::timeout(Duration::from_secs(120), attached_rx.recv()).await.expect("every agent attaches");
    }
    println!(
        "attached {count} agents in {:?} ({} attempts refused busy and retried)",
        started.elapsed(),
        RETRIES.load(Ordering::Relaxed)
    );
    let listed = hosts_api.list_hosts(pb::ListHostsRequest {}).await.unwrap().into_inner().hosts;
    assert_eq!(listed.iter().filter(|h| h.connected).count(), count);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (n, replica) in replicas.iter().enumerate() {
        println!("replica {n}: VmRSS {} KiB with every agent attached", rss_kib(replica.pid(), "VmRSS:"));
    }

    // ListJails over every host, end to end from another process.
    let token = replicas[1].token().await;
    let client = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["list_jails_client", "--exact", "--nocapture"])
        .env("FLEET_SCALE_ADDR", replicas[1].grpc_addr.to_string())
        .env("FLEET_SCALE_TOKEN", &token)
        .env("FLEET_SCALE_HOSTS", count.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&client.stdout);
    assert!(client.status.success(), "{stdout}{}", String::from_utf8_lossy(&client.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("latencies_ms ")).expect("the client's latencies");
    let mut latencies: Vec<f64> = serde_json::from_str(line).unwrap();
    latencies.sort_by(f64::total_cmp);
    println!(
        "ListJails over {count} hosts from another process: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} calls)",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies[latencies.len() - 1],
        latencies.len()
    );

    // Commands: BanIp to random hosts through random replicas.
    let mut rng_state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next_random = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let started = Instant::now();
    for n in 0..30_u32 {
        let host = usize::try_from(next_random() % count as u64).unwrap();
        let via = usize::try_from(next_random() % 3).unwrap();
        let ip = format!("192.0.2.{}", n + 1);
        let mut jails = replicas[via].jails().await;
        let ban =
            pb::BanIpRequest { host: format!("sim-{host}"), jail: "sshd".into(), ip: ip.clone(), ..Default::default() };
        assert!(jails.ban_ip(ban).await.unwrap().into_inner().newly_banned);
        let banned = fakes[host].jail_bans(&bangui_fail2ban::JailName::parse("jail", "sshd").unwrap()).await.unwrap();
        let ip_net: std::net::IpAddr = ip.parse().unwrap();
        assert!(banned.bans.iter().any(|net| net.addr() == ip_net), "the ban reached sim-{host}");
    }
    println!("30 BanIp to random hosts through random replicas: {:?} in all", started.elapsed());

    // Event ingest: every agent sends at once.
    let total = EVENTS_PER_AGENT * count as u64;
    let started = Instant::now();
    let reattached = REATTACHED.load(Ordering::Relaxed);
    send_events.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(600);
    while acknowledged.load(Ordering::Relaxed) < total {
        let done = acknowledged.load(Ordering::Relaxed);
        assert!(Instant::now() < deadline, "{done} of {total} events acknowledged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    println!(
        "event ingest: {total} events from {count} agents in {took:?}: {:.0} events/s into PostgreSQL ({} streams \
         ended by a busy replica and attached again)",
        total as f64 / took.as_secs_f64(),
        REATTACHED.load(Ordering::Relaxed) - reattached
    );
    let stored: i64 = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect_with(&schema.options()).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM ban_history WHERE host <> 'local'").fetch_one(&mut conn).await.unwrap()
    };
    // The operator's 30 bans are archived too (origin manual).
    assert_eq!(stored, i64::try_from(total).unwrap() + 30, "every event stored exactly once");
    for (n, replica) in replicas.iter().enumerate() {
        let peak = rss_kib(replica.pid(), "VmHWM:");
        println!("replica {n}: VmRSS {} KiB, peak (VmHWM) {peak} KiB", rss_kib(replica.pid(), "VmRSS:"));
        assert!(peak <= 128 * 1024, "replica {n} peaked at {peak} KiB");
    }
}
