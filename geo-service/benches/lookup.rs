//! Lookup benchmarks on the real GeoLite2-Country database.
//!
//! Run: `scripts/bench.sh` (fetches the data, runs this, and runs the same
//! addresses through libmaxminddb for comparison), or directly
//! `cargo bench -p geo-service --bench lookup`.
//!
//! Measures, on 10 000 mixed IPv4/IPv6 addresses (70/30, fixed seed):
//! * in-process parse + lookup + decode per address, through the service's
//!   own path (`resolve_in`: normalize, reserved check, every field of the
//!   record) and through bare `maxminddb` decoding only `country.iso_code`;
//! * `LookupBatch` of the 10 000 server-side: the gRPC handler called in
//!   process, proto results built, no network; and the same with the
//!   request decoded from and the response encoded to protobuf bytes;
//! * the same `LookupBatch` over loopback from a tonic client.
//!
//! The address list is written to `$BANGUI_BENCH_IPS` (default
//! `target/bench-ips.txt`) so the C benchmark reads exactly the same input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use bangui_proto::geo::v1::{self as pb, geo_service_server::GeoService as _};
use geo_service::{
    api::GeoApi,
    metrics::Metrics,
    mmdb::{DatabaseSet, DatabaseSource},
    resolve::{Resolver, resolve_in},
};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADDRESSES: usize = 10_000;

fn data_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("BANGUI_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/bangui/data"));
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run scripts/fetch-test-data.sh first", path.display());
    path
}

fn mixed_addresses() -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..ADDRESSES)
        .map(|i| {
            if i % 10 < 7 {
                IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()))
            } else {
                // Inside 2000::/4 where the RIR blocks are.
                IpAddr::V6(Ipv6Addr::from((0x2u128 << 124) | (rng.random::<u128>() >> 4)))
            }
            .to_string()
        })
        .collect()
}

/// Runs `f` (which handles `per_run` items) `runs` times after a warm-up;
/// returns the per-run times sorted.
fn measure(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..runs.div_ceil(10) {
        f();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// Like [`measure`], but only `run` is timed: `setup` makes its input and
/// whatever `run` returns is dropped outside the timed region.
fn measure_with<I, O>(runs: usize, mut setup: impl FnMut() -> I, mut run: impl FnMut(I) -> O) -> Vec<Duration> {
    for _ in 0..runs.div_ceil(10) {
        drop(run(setup()));
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let input = setup();
            let start = Instant::now();
            let output = run(input);
            let elapsed = start.elapsed();
            drop(black_box(output));
            elapsed
        })
        .collect();
    times.sort();
    times
}

fn report(name: &str, times: &[Duration], per_run: usize) {
    let median = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    let min = times[0];
    let per_item = |d: Duration| d.as_nanos() as f64 / per_run as f64;
    println!(
        "{name:<44} median {:>9.3} ms  p99 {:>9.3} ms  min {:>9.3} ms  ({:.0} ns/address median, {:.0} min)",
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        per_item(median),
        per_item(min),
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing:
    // do a quick smoke run then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 3 } else { 200 };

    let db_path = data_file("GeoLite2-Country.mmdb");
    let ips = mixed_addresses();
    let ips_file = std::env::var_os("BANGUI_BENCH_IPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-ips.txt"));
    std::fs::write(&ips_file, ips.join("\n") + "\n").unwrap();
    println!("database {}  addresses {} (written to {})", db_path.display(), ips.len(), ips_file.display());

    let set = DatabaseSet::load(&[DatabaseSource::File(db_path.clone())]).unwrap();
    let found =
        ips.iter().filter(|ip| matches!(resolve_in(&set, ip), geo_service::resolve::Resolution::Found { .. })).count();
    println!("placed by the database: {found} of {}", ips.len());

    let times = measure(runs, || {
        for ip in &ips {
            black_box(resolve_in(&set, black_box(ip)));
        }
    });
    report("in-process resolve (service path)", &times, ips.len());

    let reader = maxminddb::Reader::open_readfile(&db_path).unwrap();
    let times = measure(runs, || {
        for ip in &ips {
            let addr: IpAddr = ip.parse().unwrap();
            let result = reader.lookup(addr).unwrap();
            let country: Option<&str> = result.decode_path(&maxminddb::path!["country", "iso_code"]).unwrap();
            black_box(country);
        }
    });
    report("in-process bare maxminddb (country.iso_code)", &times, ips.len());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let store = runtime.block_on(geo_service::store::connect("sqlite::memory:")).unwrap();
    let metrics = Metrics::new();
    let cache = std::sync::Arc::new(geo_service::cache::AnswerCache::new(store, Default::default(), metrics.clone()));
    let resolver = Resolver::new(set);
    let reloader = geo_service::reload::Reloader::new(
        vec![DatabaseSource::File(db_path.clone())],
        resolver.clone(),
        metrics.clone(),
    );
    let lookups = geo_service::lookup::Lookups::new(resolver, cache, None, metrics.clone());
    let api = GeoApi::new(lookups, reloader, metrics, ADDRESSES);
    let request = pb::LookupBatchRequest { ips: ips.clone(), allow_remote: false };
    let times = measure_with(
        runs,
        || tonic::Request::new(request.clone()),
        |req| {
            let reply = runtime.block_on(api.lookup_batch(req)).unwrap();
            assert_eq!(reply.get_ref().results.len(), ADDRESSES);
            reply
        },
    );
    report("LookupBatch 10k, server side (handler)", &times, ips.len());

    let wire = prost::Message::encode_to_vec(&request);
    let times = measure_with(
        runs,
        || wire.clone(),
        |bytes| {
            let req = <pb::LookupBatchRequest as prost::Message>::decode(bytes.as_slice()).unwrap();
            let reply = runtime.block_on(api.lookup_batch(tonic::Request::new(req))).unwrap();
            prost::Message::encode_to_vec(reply.get_ref())
        },
    );
    report("LookupBatch 10k, decode + handler + encode", &times, ips.len());

    let (addr, mut client) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = pb::geo_service_server::GeoServiceServer::new(api.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let client = pb::geo_service_client::GeoServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20);
        (addr, client)
    });
    let times = measure(runs.min(100), || {
        let reply = runtime.block_on(client.lookup_batch(request.clone())).unwrap();
        black_box(reply);
    });
    report(&format!("LookupBatch 10k over loopback ({addr})"), &times, ips.len());

    if !quick {
        unary_load(&runtime, &db_path, &ips);
    }
}

/// Unary `Lookup` under load against the real release binary in its own
/// process: concurrent callers (64 unless `BANGUI_BENCH_CALLERS` says
/// otherwise) over 4 HTTP/2 connections for 5 s, one
/// address per call from the same list. Client and server share the two
/// cores, so this is a lower bound for the server alone.
fn unary_load(runtime: &tokio::runtime::Runtime, db_path: &std::path::Path, ips: &[String]) {
    use std::io::BufRead;
    const CONNECTIONS: usize = 4;
    const DURATION: Duration = Duration::from_secs(5);
    // Concurrent callers: BANGUI_BENCH_CALLERS, default 64.
    let callers: usize = std::env::var("BANGUI_BENCH_CALLERS").ok().and_then(|v| v.parse().ok()).unwrap_or(64);

    // BANGUI_BENCH_SERVER_CPUS=1 runs the server under `taskset -c 1` (run
    // the bench itself under `taskset -c 0` to keep the two apart).
    let mut command = match std::env::var("BANGUI_BENCH_SERVER_CPUS") {
        Ok(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", &cpus, env!("CARGO_BIN_EXE_geo-service")]);
            c
        }
        Err(_) => std::process::Command::new(env!("CARGO_BIN_EXE_geo-service")),
    };
    let mut child = command
        .arg("--mmdb")
        .arg(db_path)
        .args(["--database-url", "sqlite::memory:", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--log-format", "json", "--watch", "false"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    for line in stdout.lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["message"] == "serving"
        {
            addr = v["grpc_addr"].as_str().map(str::to_owned);
            break;
        }
    }
    let addr = addr.expect("geo-service did not start");

    let (count, mut latencies) = runtime.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            channels.push(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap(),
            );
        }
        let ips: std::sync::Arc<Vec<String>> =
            std::sync::Arc::new(ips.iter().filter(|ip| !ip.is_empty()).cloned().collect());
        let deadline = Instant::now() + DURATION;
        let mut tasks = Vec::new();
        for caller in 0..callers {
            let mut client = pb::geo_service_client::GeoServiceClient::new(channels[caller % CONNECTIONS].clone());
            let ips = ips.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = caller * 131;
                while Instant::now() < deadline {
                    let ip = ips[i % ips.len()].clone();
                    i += 1;
                    let start = Instant::now();
                    // Invalid addresses are INVALID_ARGUMENT: still an answered call.
                    let _ = black_box(client.lookup(pb::LookupRequest { ip, allow_remote: false }).await);
                    latencies.push(start.elapsed());
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        (all.len(), all)
    });
    let _ = child.kill();
    let _ = child.wait();
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "unary Lookup, {callers} callers / {CONNECTIONS} connections, {:?}: {:.0} RPS  p50 {:.3} ms  p99 {:.3} ms  ({count} calls)",
        DURATION,
        count as f64 / DURATION.as_secs_f64(),
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3,
    );
}
