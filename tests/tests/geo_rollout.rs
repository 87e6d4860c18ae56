//! A rolling update of the geo-service under load, with real processes:
//! two geo-services on 127.0.0.2:P and 127.0.0.3:P behind the
//! control-service's balanced client; while a task lists active bans (each
//! answer needs the geo-service) in a loop and the history sync archives
//! new bans every second, each geo process in turn gets SIGTERM and a
//! replacement starts on its address. No answer may come without countries,
//! no call may fail, and nothing is archived without its country.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bangui_e2e::{
    ControlService, GeoService, eventually,
    fail2ban::Fail2banServer,
    ip_api::{FakeIpApi, Mode},
};
use bangui_proto::{
    control::v1::{self as pb, history_service_client::HistoryServiceClient},
    geo::v1::LookupBatchRequest,
};

const HOSTS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];

/// A port free on both loopback addresses.
fn free_port() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind(SocketAddr::new(IpAddr::V4(HOSTS[0]), 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if TcpListener::bind(SocketAddr::new(IpAddr::V4(HOSTS[1]), port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// A geo-service on `host:port`, started off the async runtime.
async fn start_geo(host: Ipv4Addr, port: u16) -> GeoService {
    let listen = format!("{host}:{port}");
    let geo =
        tokio::task::spawn_blocking(move || GeoService::start(&["--mmdb", "builtin:sample", "--listen", &listen]))
            .await
            .unwrap();
    assert_eq!(geo.grpc_addr, SocketAddr::new(IpAddr::V4(host), port));
    geo
}

/// Lookups this geo-service answered with a country.
async fn found(geo: &GeoService) -> f64 {
    geo.metric("geo_lookups_total{status=\"found\"}").await.unwrap_or(0.0)
}

#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    failed: Vec<String>,
    without_geo: u64,
    without_countries: u64,
    max_latency: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_of_the_geo_service_loses_no_call() {
    let port = free_port();
    let mut geos = vec![start_geo(HOSTS[0], port).await, start_geo(HOSTS[1], port).await];
    let f2b = Fail2banServer::start();
    let endpoints = HOSTS.iter().map(|host| format!("http://{host}:{port}")).collect::<Vec<_>>().join(",");
    let socket = f2b.socket_str();
    let config = f2b.config_dir().display().to_string();
    let control = ControlService::start(&[
        "--fail2ban-socket",
        &socket,
        "--fail2ban-config-dir",
        &config,
        "--probe-interval",
        "200ms",
        "--geo-endpoint",
        &endpoints,
        "--geo-resolve-interval",
        "200ms",
    ]);
    control.set_history_sync_schedule("* * * * * *").await;
    let mut history = HistoryServiceClient::new(control.authed_with(&control.token().await).await);
    let mut jails = control.jails().await;
    // Addresses the sample database places (and one it does not).
    for (jail, ip) in [("alpha", "8.8.8.8"), ("beta", "81.2.69.160"), ("alpha", "192.0.2.77")] {
        jails.ban_ip(pb::BanIpRequest { jail: jail.into(), ip: ip.into(), ..Default::default() }).await.unwrap();
    }
    // Both geo-services take lookups before the rollout starts.
    for geo in &geos {
        eventually(10, "lookups on both geo-services", || {
            let mut jails = jails.clone();
            async move {
                jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await.unwrap();
                found(geo).await > 0.0
            }
        })
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let stop = stop.clone();
        let mut jails = jails.clone();
        tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = jails.list_active_bans(pb::ListActiveBansRequest { ..Default::default() }).await;
                tally.max_latency = tally.max_latency.max(started.elapsed());
                tally.calls += 1;
                match answer {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        if !answer.geo_available {
                            tally.without_geo += 1;
                        }
                        let country = |ip: &str| {
                            answer.bans.iter().find(|b| b.ip == ip).map(|b| b.country_code.clone()).unwrap_or_default()
                        };
                        if answer.bans.len() < 3 || country("8.8.8.8") != "US" || country("81.2.69.160") != "GB" {
                            tally.without_countries += 1;
                        }
                    }
                    Err(status) => tally.failed.push(format!("{:?}: {}", status.code(), status.message())),
                }
            }
            tally
        })
    };

    for (slot, host) in HOSTS.into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // New bans from log lines, for the sync to archive around the SIGTERM.
        f2b.fail_logins("alpha", &format!("203.0.113.{}", 10 + slot), 3);
        let old = geos.remove(slot);
        let served_before = found(&old).await;
        assert_eq!(old.shutdown().await.code(), Some(0), "the geo-service drains and exits cleanly");
        f2b.fail_logins("alpha", &format!("203.0.113.{}", 20 + slot), 3);
        let replacement = start_geo(host, port).await;
        // The control-service's client takes the replacement back into its
        // set: it answers lookups before the other one goes.
        eventually(10, "the replacement answers lookups", || async { found(&replacement).await > 0.0 }).await;
        assert!(served_before > 0.0, "geo {slot} took lookups before it was replaced");
        geos.insert(slot, replacement);
    }
    // Every ban is archived (3 made through the API, 4 from log lines).
    let day = || Some(pb::HistoryFilter { window: pb::Window::Window24h.into(), ..Default::default() });
    eventually(30, "seven archived bans", || {
        let mut history = history.clone();
        async move {
            let page = pb::ListBansRequest { filter: day(), page_size: 100, page_token: String::new() };
            history.list_bans(page).await.unwrap().into_inner().bans.len() == 7
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let tally = caller.await.unwrap();

    println!(
        "geo rollout: {} ListActiveBans calls, {} failed, {} without geo, {} without countries, max latency {:?}",
        tally.calls,
        tally.failed.len(),
        tally.without_geo,
        tally.without_countries,
        tally.max_latency
    );
    assert!(tally.calls > 50, "the loop ran through the rollout: {tally:?}");
    assert!(tally.failed.is_empty(), "{tally:?}");
    assert_eq!(tally.without_geo, 0, "{tally:?}");
    assert_eq!(tally.without_countries, 0, "{tally:?}");
    let archived = history
        .list_bans(pb::ListBansRequest { filter: day(), page_size: 100, page_token: String::new() })
        .await
        .unwrap()
        .into_inner()
        .bans;
    let country = |ip: &str| archived.iter().find(|b| b.ip == ip).map(|b| b.country_code.clone());
    assert_eq!((country("8.8.8.8"), country("81.2.69.160")), (Some("US".into()), Some("GB".into())));
    let unavailable: Vec<String> =
        control.logs().into_iter().filter(|line| line.contains("geo-service unavailable")).collect();
    assert!(unavailable.is_empty(), "no geo call of the sync or the back-fill failed: {unavailable:?}");
    assert_eq!(control.shutdown().await.code(), Some(0));
}

/// What the balanced client relies on: after SIGTERM a geo-service takes no
/// new call (on its open connection or a new one) and still answers the
/// call it had started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_geo_service_finishes_in_flight_lookups_and_takes_no_new_ones() {
    let fake = FakeIpApi::start().await;
    fake.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let url = fake.url();
    let geo = GeoService::start(&["--mmdb", "builtin:sample", "--http-fallback", "true", "--fallback-url", &url]);
    let mut client = geo.client().await;
    let same_connection = client.clone();
    // 3.0.0.1 is not in the sample database: the fallback (slow) answers it.
    let in_flight = tokio::spawn(async move {
        let request = LookupBatchRequest { ips: vec!["3.0.0.1".into()], allow_remote: true };
        client.lookup_batch(request).await
    });
    eventually(5, "the lookup reached the fallback", || async { !fake.seen().is_empty() }).await;

    let pid = geo.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let new_call = |mut client: bangui_proto::geo::v1::geo_service_client::GeoServiceClient<
        tonic::transport::Channel,
    >| async move {
        let request = LookupBatchRequest { ips: vec!["8.8.8.8".into()], allow_remote: false };
        tokio::time::timeout(Duration::from_secs(1), client.lookup_batch(request)).await
    };
    let refused = new_call(same_connection).await;
    assert!(matches!(refused, Ok(Err(_))), "a new stream on the open connection is refused at once: {refused:?}");
    let endpoint = geo.endpoint();
    let fresh = tonic::transport::Endpoint::from_shared(endpoint).unwrap().connect_lazy();
    let refused = new_call(bangui_proto::geo::v1::geo_service_client::GeoServiceClient::new(fresh)).await;
    assert!(matches!(refused, Ok(Err(_))), "a new connection is refused at once: {refused:?}");

    let answer = in_flight.await.unwrap().expect("the in-flight lookup is answered").into_inner();
    assert_eq!(answer.results[0].country_code, "CA", "{answer:?}");
    assert_eq!(geo.shutdown().await.code(), Some(0));
}
