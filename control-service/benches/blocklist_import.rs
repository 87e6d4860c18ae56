//! Blocklist import benchmark (custom harness): N addresses into a real
//! fail2ban-server through the release control-service's import, end to
//! end, against BanGUI's old way, one `banip` socket command per address.
//!
//! ```sh
//! cargo bench -p control-service --bench blocklist_import
//! # another list size (default 20 000):
//! BENCH_ADDRESSES=2000 cargo bench -p control-service --bench blocklist_import
//! BENCH_NO_ACTION=1 cargo bench -p control-service --bench blocklist_import   # the jail without a ban action
//! ```
//!
//! Both sides run against the same fail2ban-server (the `blocklist-import`
//! jail as shipped, the test harness's `dummy` ban action): first a
//! `CreateSource` and an `ImportNow` over gRPC from this process, timed
//! from the `ImportNow` call until `ListImportRuns` shows the run (polled
//! every 100 ms); then, on the emptied jail, the same addresses banned one
//! `set blocklist-import banip <ip>` at a time, sequentially, through
//! [`SocketClient`]. Each side checks the jail holds all N afterwards.
//!
//! The control-service binary is the release one cargo builds for this
//! bench (`BANGUI_BIN_DIR`, unless the caller set it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use bangui_e2e::{
    ControlService,
    fail2ban::{BLOCKLIST_JAIL, Fail2banOptions, Fail2banServer},
};
use bangui_fail2ban::{SocketClient, SocketSettings, Unobserved};
use bangui_proto::control::v1::{self as pb, blocklist_service_client::BlocklistServiceClient};
use bangui_runtime::reserved::reserved_range;
use bangui_testkit::list_server::ListServer;

/// Addresses in the list unless `BENCH_ADDRESSES` says otherwise.
const DEFAULT_ADDRESSES: usize = 20_000;
/// How often the client asks whether the run has ended.
const POLL: Duration = Duration::from_millis(100);
/// A run that has not ended by then is a failure, not a slow figure.
const RUN_DEADLINE: Duration = Duration::from_secs(30 * 60);

fn main() {
    // The harness finds binaries through BANGUI_BIN_DIR, and setting the
    // variable in this process would need `unsafe`: run again with it set.
    if std::env::var_os("BANGUI_BIN_DIR").is_none() {
        let bin = Path::new(env!("CARGO_BIN_EXE_control-service"));
        let dir = bin.parent().expect("the binary has a directory");
        let status = Command::new(std::env::current_exe().expect("own path"))
            .args(std::env::args_os().skip(1))
            .env("BANGUI_BIN_DIR", dir)
            .status()
            .expect("run the bench again with BANGUI_BIN_DIR");
        std::process::exit(status.code().unwrap_or(1));
    }
    let n = std::env::var("BENCH_ADDRESSES")
        .ok()
        .map(|v| v.parse::<usize>().expect("BENCH_ADDRESSES is a count"))
        .unwrap_or(DEFAULT_ADDRESSES);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(n));
}

/// `n` distinct public IPv4 addresses, from 1.0.0.0 upward, skipping every
/// reserved range, the same on every run.
fn public_addresses(n: usize) -> Vec<Ipv4Addr> {
    (u32::from(Ipv4Addr::new(1, 0, 0, 0))..)
        .map(Ipv4Addr::from)
        .filter(|ip| reserved_range(IpAddr::V4(*ip)).is_none())
        .take(n)
        .collect()
}

async fn run(n: usize) {
    let addresses = public_addresses(n);
    let body: String = addresses.iter().map(|ip| format!("{ip}\n")).collect();
    println!(
        "blocklist import bench: {n} addresses ({} .. {}), binaries from {}",
        addresses[0],
        addresses[n - 1],
        std::env::var("BANGUI_BIN_DIR").unwrap_or_default()
    );

    // BENCH_NO_ACTION=1: the jail runs no ban action, so what is left is
    // fail2ban's own work per ban and the socket round trips.
    let without_action = std::env::var_os("BENCH_NO_ACTION").is_some();
    println!("ban action: {}", if without_action { "none" } else { "dummy (a shell per address)" });
    let f2b = Fail2banServer::start_with(&Fail2banOptions {
        blocklist_jail: true,
        blocklist_without_action: without_action,
        ..Fail2banOptions::default()
    });
    let lists = ListServer::start().await;
    lists.set("bench.txt", body);
    let socket = f2b.socket_str();
    let control = ControlService::start(&[
        "--fail2ban-socket",
        &socket,
        "--blocklist-allow-private",
        "--lease-ttl",
        "2s",
        "--lease-retry",
        "200ms",
    ]);

    let import = import_end_to_end(&control, &lists.url("bench.txt"), n).await;
    print_fail2ban_time(&control.metrics_text().await);
    assert_eq!(jail_count(&f2b), n, "the jail holds every address after the import");

    // `set <jail> unbanip --all` reads `--all` as an address in fail2ban
    // 1.0.2 and unbans nothing; `unban --all` empties every jail (only this
    // one holds bans here).
    f2b.client_ok(&["unban", "--all"]);
    assert_eq!(jail_count(&f2b), 0, "the jail is empty before the one-at-a-time bans");

    let one_by_one = one_at_a_time(&f2b, &addresses).await;
    assert_eq!(jail_count(&f2b), n, "the jail holds every address after the one-at-a-time bans");

    report(n, import, one_by_one);
}

/// Creates the source, imports it without waiting, and polls until its run
/// is listed. Returns the client-side time from the `ImportNow` call.
async fn import_end_to_end(control: &ControlService, url: &str, n: usize) -> Duration {
    let mut client = BlocklistServiceClient::new(control.authed().await);
    let spec = pb::SourceSpec { name: "bench".into(), url: url.into(), enabled: true, ..Default::default() };
    let created = client.create_source(pb::CreateSourceRequest { spec: Some(spec) }).await.unwrap().into_inner();
    let id = created.source.unwrap().id;

    let started = Instant::now();
    let asked = client.import_now(pb::ImportNowRequest { id, wait: false }).await.unwrap().into_inner();
    assert_eq!(asked.source_ids, vec![id]);
    let run = loop {
        let page = client
            .list_import_runs(pb::ListImportRunsRequest { source_id: id, page_size: 1, page_token: String::new() })
            .await
            .unwrap()
            .into_inner();
        if let Some(run) = page.runs.into_iter().next() {
            break run;
        }
        assert!(started.elapsed() < RUN_DEADLINE, "no run after {RUN_DEADLINE:?}");
        tokio::time::sleep(POLL).await;
    };
    let elapsed = started.elapsed();

    let counts = run.counts.unwrap_or_default();
    println!("import run: status {}, http {}, {} bytes", run.status, run.http_status, run.bytes);
    println!(
        "import run: server time (finished_at - started_at) {:.3} s ({:?} .. {:?})",
        server_seconds(&run),
        run.started_at,
        run.finished_at
    );
    println!("import run: counts {counts:?}");
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!(counts.newly_banned, n as u64, "{counts:?}");
    elapsed
}

/// The run's own duration from its timestamps (whole seconds: the store
/// keeps seconds).
fn server_seconds(run: &pb::ImportRun) -> f64 {
    let seconds = |t: &Option<bangui_proto::prost_types::Timestamp>| {
        t.as_ref().map_or(f64::NAN, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
    };
    seconds(&run.finished_at) - seconds(&run.started_at)
}

/// Bans every address with its own `banip` command, one after the other,
/// as BanGUI did before imports. Returns the time of the whole loop.
async fn one_at_a_time(f2b: &Fail2banServer, addresses: &[Ipv4Addr]) -> Duration {
    let settings = SocketSettings {
        path: f2b.socket(),
        connect_timeout: Duration::from_secs(10),
        reply_timeout: Duration::from_secs(10),
        max_in_flight: 1,
    };
    let client = SocketClient::new(settings, Arc::new(Unobserved));
    let started = Instant::now();
    for ip in addresses {
        let ip = ip.to_string();
        client.call(&["set", BLOCKLIST_JAIL, "banip", &ip]).await.unwrap_or_else(|e| panic!("banip {ip}: {e}"));
    }
    started.elapsed()
}

/// Where the import's time went on fail2ban's side: the service's own
/// totals per command (`get`: which of a chunk are banned already, plus the
/// ignore list and ban time; `set`: the `banip` chunks).
fn print_fail2ban_time(metrics: &str) {
    for command in ["get", "set"] {
        let value = |series: &str| {
            let prefix = format!("control_fail2ban_command_duration_seconds_{series}{{command=\"{command}\"}} ");
            metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())?.trim().parse::<f64>().ok())
        };
        if let (Some(sum), Some(count)) = (value("sum"), value("count")) {
            println!("import run: fail2ban `{command}` commands: {count} taking {sum:.3} s in all");
        }
    }
}

/// `fail2ban-client get blocklist-import banip`, counted.
fn jail_count(f2b: &Fail2banServer) -> usize {
    f2b.banned(BLOCKLIST_JAIL).len()
}

fn report(n: usize, import: Duration, one_by_one: Duration) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "import, end to end (ImportNow to run listed): {:.3} s, {:.1} us per address",
        import.as_secs_f64(),
        per(import)
    );
    println!(
        "one banip per address, sequential:            {:.3} s, {:.1} us per address",
        one_by_one.as_secs_f64(),
        per(one_by_one)
    );
    println!("ratio one-at-a-time / import: {:.2}", one_by_one.as_secs_f64() / import.as_secs_f64());
}
