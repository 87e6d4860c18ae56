//! A rolling update of the control-service, done with real processes: three
//! replicas on PostgreSQL and a real fail2ban-server; a client that knows
//! all three (as a Service would) calls JailService/ListJails and
//! HistoryService/ListBans in a loop, moving to the next replica when one
//! fails; each replica in turn gets SIGTERM and a new one starts, while the
//! jobs run every second. No call fails after the client's retry, the lease
//! passes on at once when the leader leaves, and no job slot runs twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bangui_e2e::{Bearer, ControlService, PgSchema, fail2ban::Fail2banServer};
use bangui_proto::control::v1::{
    self as pb, cluster_service_client::ClusterServiceClient, history_service_client::HistoryServiceClient,
    jail_service_client::JailServiceClient,
};
use tonic::transport::Channel;

fn start(url: &str, socket: &str) -> ControlService {
    ControlService::start(&[
        "--database-url",
        url,
        "--fail2ban-socket",
        socket,
        "--lease-ttl",
        "2s",
        "--lease-retry",
        "200ms",
        "--shutdown-grace",
        "2s",
    ])
}

/// What the looping client saw.
#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    /// Attempts that failed (each followed by one on the next replica).
    retried: u64,
    /// Calls that failed on every replica tried.
    failed: Vec<String>,
    slowest: Duration,
}

/// One ListJails and one ListBans, on `addr`.
async fn call(addr: &str, token: &str) -> Result<(), String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let bearer = Bearer(format!("Bearer {token}").parse().unwrap());
    let mut jails = JailServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let jails = jails
        .list_jails(pb::ListJailsRequest { ..Default::default() })
        .await
        .map_err(|s| format!("ListJails: {s:?}"))?;
    if jails.into_inner().jails.len() != 2 {
        return Err("ListJails: not the two jails".into());
    }
    let mut history = HistoryServiceClient::with_interceptor(channel, bearer);
    let filter = pb::HistoryFilter { window: pb::Window::Window24h.into(), ..Default::default() };
    history
        .list_bans(pb::ListBansRequest { filter: Some(filter), page_size: 10, page_token: String::new() })
        .await
        .map_err(|s| format!("ListBans: {s:?}"))?;
    Ok(())
}

async fn leader_of(addrs: &[String], token: &str) -> Option<(String, i64)> {
    for addr in addrs {
        let Ok(channel) = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await else { continue };
        let bearer = Bearer(format!("Bearer {token}").parse().unwrap());
        let mut cluster = ClusterServiceClient::with_interceptor(channel, bearer);
        if let Ok(view) = cluster.get_leader(pb::GetLeaderRequest {}).await {
            let view = view.into_inner();
            if view.this_replica_leads {
                return Some((addr.clone(), view.term));
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_of_three_replicas_loses_no_call() {
    let f2b = Fail2banServer::start();
    let schema = PgSchema::create("control_rollout").await;
    let url = schema.url();
    let socket = f2b.socket_str();
    let mut replicas: Vec<ControlService> = (0..3).map(|_| start(&url, &socket)).collect();
    let token = replicas[0].token().await;
    replicas[0].set_history_sync_schedule("* * * * * *").await;
    let addrs: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(replicas.iter().map(|r| r.grpc_addr.to_string()).collect()));

    // The client: round robin over the replicas it knows; a failed attempt
    // moves on to the next one (at most three attempts a call).
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let client = tokio::spawn({
        let (addrs, stop, tally, token) = (addrs.clone(), stop.clone(), tally.clone(), token.clone());
        async move {
            let mut next = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let mut errors = Vec::new();
                let mut answered = false;
                for _ in 0..3 {
                    let addr = {
                        let addrs = addrs.lock().unwrap();
                        next += 1;
                        addrs[next % addrs.len()].clone()
                    };
                    match call(&addr, &token).await {
                        Ok(()) => {
                            answered = true;
                            break;
                        }
                        Err(error) => errors.push(format!("{addr}: {error}")),
                    }
                }
                let mut tally = tally.lock().unwrap();
                tally.calls += 1;
                tally.slowest = tally.slowest.max(started.elapsed());
                tally.retried += errors.len() as u64;
                if !answered {
                    tally.failed.push(errors.join("; "));
                }
            }
        }
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut handovers = Vec::new();
    for _ in 0..3 {
        // The oldest replica goes (a rolling update replaces every pod once).
        let leaving = replicas.remove(0);
        let leaving_addr = leaving.grpc_addr.to_string();
        let known = addrs.lock().unwrap().clone();
        let led = leader_of(&known, &token).await;
        let sigterm = Instant::now();
        let exit = leaving.shutdown().await;
        assert_eq!(exit.code(), Some(0));
        if let Some((leader, term)) = led
            && leader == leaving_addr
        {
            let others: Vec<String> = addrs.lock().unwrap().iter().filter(|a| **a != leaving_addr).cloned().collect();
            loop {
                if let Some((_, new_term)) = leader_of(&others, &token).await
                    && new_term > term
                {
                    break;
                }
                assert!(sigterm.elapsed() < Duration::from_secs(10), "no new leader after the leader left");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            handovers.push(sigterm.elapsed());
        }
        let fresh = start(&url, &socket);
        addrs.lock().unwrap().push(fresh.grpc_addr.to_string());
        replicas.push(fresh);
        // The client learns late that the old replica is gone (as endpoints
        // of a Service propagate): its calls there fail and are retried.
        tokio::time::sleep(Duration::from_secs(1)).await;
        addrs.lock().unwrap().retain(|a| *a != leaving_addr);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    println!(
        "control rollout: {} calls, {} failed after retry, {} attempts retried, slowest {:?}; handovers {:?}",
        tally.calls,
        tally.failed.len(),
        tally.retried,
        tally.slowest,
        handovers
    );
    assert!(tally.calls > 20, "{tally:?}");
    assert!(tally.failed.is_empty(), "{:?}", tally.failed);
    assert!(tally.retried > 0, "the client met a replica that was gone, and retried: {tally:?}");
    // The lease passes on at once: measured from the SIGTERM, so the old
    // leader's drain (finishing its jobs) is included.
    for took in &handovers {
        assert!(*took <= Duration::from_secs(1), "handover took {took:?}");
    }
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT job, scheduled_for FROM job_runs GROUP BY job, scheduled_for HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "a slot ran twice");
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE job = 'history_sync'").fetch_one(&pool).await.unwrap();
    assert!(runs >= 5, "the jobs ran through the rollout: {runs} history_sync runs");
}
