//! The geo-service's bounds against hostile and heavy traffic, measured on
//! the real binary: peak RSS (VmHWM from /proc/PID/status), rows in the SQL
//! cache, what reached the fallback.
//!
//! The memory bound is DESIGN.md section 9's 64 MiB for a release build. The
//! suite runs debug builds, which are larger; `BANGUI_BIN_DIR=target/release`
//! runs the same tests against release binaries and then the bound is
//! 64 MiB (see RELIABILITY.md for the command and the figures).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bangui_e2e::{GeoService, ip_api::FakeIpApi};
use bangui_proto::geo::v1::{self as pb, LookupStatus};
use tokio_stream::StreamExt;
use tonic::Code;

/// Peak RSS allowed, in KiB: 64 MiB for release binaries, 80 MiB for the
/// debug builds the suite runs (their code and unoptimized buffers are
/// larger; the measured debug peaks are in RELIABILITY.md).
fn rss_bound_kib() -> u64 {
    let release = std::env::var("BANGUI_BIN_DIR").is_ok_and(|dir| dir.contains("release"));
    if release { 64 * 1024 } else { 80 * 1024 }
}

fn status(r: &pb::LookupResult) -> LookupStatus {
    LookupStatus::try_from(r.status).unwrap()
}

/// `n` pseudo-random global IPv6 addresses (2000::/4), the same for a seed.
fn random_ipv6(n: usize, seed: u64) -> Vec<String> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|_| {
            let bits = (u128::from(next()) << 64 | u128::from(next())) & (u128::MAX >> 4) | (0x2u128 << 124);
            std::net::Ipv6Addr::from(bits).to_string()
        })
        .collect()
}

async fn cache_info(geo: &GeoService) -> pb::CacheInfo {
    geo.client().await.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner().cache.unwrap()
}

async fn still_answers(geo: &GeoService) {
    let reply = geo.client().await.lookup(pb::LookupRequest { ip: "8.8.8.8".into(), allow_remote: false }).await;
    assert_eq!(reply.unwrap().into_inner().result.unwrap().country_code, "US");
}

#[tokio::test]
async fn a_60_mb_request_and_over_long_inputs_leave_memory_bounded() {
    let geo = GeoService::start_as_deployed(&["--mmdb", "builtin:sample"]);
    let mut client = geo.client().await;
    still_answers(&geo).await;
    let at_start = geo.peak_rss_kib();

    // 30 000 000 empty strings: 60 MB on the wire, refused from the length
    // prefix before the body is buffered.
    let huge = pb::LookupBatchRequest { ips: vec![String::new(); 30_000_000], allow_remote: false };
    let err = client.lookup_batch(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());

    // A single input far over any address: over the small limit, refused
    // the same way; under it, INVALID_ARGUMENT with a bounded message.
    let err = client.lookup(pb::LookupRequest { ip: "1".repeat(1 << 20), allow_remote: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let err = client.lookup(pb::LookupRequest { ip: "2".repeat(3_000), allow_remote: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("longer than any IP address") && err.message().len() < 300, "{}", err.message());

    // In a batch: that item is INVALID and echoes a bounded prefix.
    let request = pb::LookupBatchRequest { ips: vec!["3".repeat(50_000), "8.8.8.8".into()], allow_remote: false };
    let results = client.lookup_batch(request).await.unwrap().into_inner().results;
    assert_eq!(status(&results[0]), LookupStatus::Invalid);
    assert!(results[0].input.len() <= 70 && results[0].error.len() < 300, "{:?}", results[0]);
    assert_eq!(status(&results[1]), LookupStatus::Found);

    // A stream message over the limit ends the stream with RESOURCE_EXHAUSTED.
    let messages = vec![
        pb::LookupStreamRequest { ip: "8.8.8.8".into(), allow_remote: false },
        pb::LookupStreamRequest { ip: "4".repeat(1 << 20), allow_remote: false },
    ];
    let mut replies = client.lookup_stream(tokio_stream::iter(messages)).await.unwrap().into_inner();
    assert_eq!(replies.next().await.unwrap().unwrap().result.unwrap().country_code, "US");
    let err = replies.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    still_answers(&geo).await;
    let peak = geo.peak_rss_kib();
    eprintln!("geo-service peak RSS: {at_start} KiB at start, {peak} KiB after the oversized requests");
    assert!(peak < rss_bound_kib(), "peak RSS {peak} KiB over {} KiB", rss_bound_kib());
}

#[tokio::test]
async fn fifty_batches_of_random_ipv6_store_nothing_without_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("geo.db").display());
    let geo =
        GeoService::start_as_deployed(&["--mmdb", "builtin:sample", "--flush-interval", "1h", "--database-url", &db]);
    let mut client = geo.client().await;
    for round in 0..50 {
        let request = pb::LookupBatchRequest { ips: random_ipv6(10_000, round + 1), allow_remote: false };
        let results = client.lookup_batch(request).await.unwrap().into_inner().results;
        // Misses, or special-purpose space (2001::/23, 2002::/16 around a
        // reserved IPv4, 3fff::/20, …) answered locally: neither is stored.
        assert!(results.iter().all(|r| matches!(status(r), LookupStatus::NotFound | LookupStatus::Reserved)));
        assert!(results.iter().filter(|r| status(r) == LookupStatus::NotFound).count() > 9_000);
    }
    let info = cache_info(&geo).await;
    assert_eq!((info.pending_writes, info.memory_negatives), (0, 0), "a database miss is not a negative");
    let peak = geo.peak_rss_kib();
    eprintln!("geo-service peak RSS after 50 x 10 000 random IPv6: {peak} KiB");
    assert!(peak < rss_bound_kib(), "peak RSS {peak} KiB over {} KiB", rss_bound_kib());
    // The final flush writes nothing either.
    assert!(geo.shutdown().await.success());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM geo_cache").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn with_the_fallback_on_rows_grow_only_at_its_budget() {
    let fake = FakeIpApi::start().await;
    let url = fake.url();
    let geo = GeoService::start(&[
        "--mmdb",
        "builtin:sample",
        "--http-fallback",
        "true",
        "--fallback-url",
        &url,
        "--fallback-batch-per-minute",
        "3",
    ]);
    let mut client = geo.client().await;
    for round in 0..5 {
        let request = pb::LookupBatchRequest { ips: random_ipv6(10_000, round + 100), allow_remote: true };
        client.lookup_batch(request).await.unwrap();
    }
    let asked: usize = fake.seen().iter().map(|s| s.ips.len()).sum();
    assert_eq!(fake.seen().len(), 3, "the budget: 3 batch requests this minute");
    let info = cache_info(&geo).await;
    assert_eq!(info.memory_answers as usize, asked, "a row for each address the fallback answered, no more");
    assert_eq!(info.pending_writes as usize, asked);
}

#[tokio::test]
async fn batches_beyond_the_gate_are_shed_before_they_are_read() {
    let geo =
        GeoService::start(&["--mmdb", "builtin:sample", "--max-concurrent-batches", "1", "--max-queued-batches", "2"]);
    let client = geo.client().await;
    let ips = random_ipv6(10_000, 7);
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = client.clone();
            let request = pb::LookupBatchRequest { ips: ips.clone(), allow_remote: false };
            tokio::spawn(async move { client.lookup_batch(request).await.map(|_| ()) })
        })
        .collect();
    let mut shed = 0;
    let mut answered = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(()) => answered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("LookupBatch calls in flight"), "{}", status.message());
                shed += 1;
            }
        }
    }
    assert!(answered >= 1 && shed >= 1, "answered {answered}, shed {shed}");
    still_answers(&geo).await;
}

/// The gate's worst case: more full batches at once than it answers (the
/// default, 2; the others wait), again and again; every address written out
/// at full length.
#[tokio::test]
async fn concurrent_full_batches_stay_within_the_bound() {
    let geo = GeoService::start_as_deployed(&["--mmdb", "builtin:sample"]);
    let client = geo.client().await;
    for round in 0..10u64 {
        let calls: Vec<_> = (0..4u64)
            .map(|i| {
                let mut client = client.clone();
                let ips = random_ipv6(10_000, round * 4 + i + 1_000)
                    .into_iter()
                    .map(|ip| {
                        let ip: std::net::Ipv6Addr = ip.parse().unwrap();
                        ip.segments().map(|s| format!("{s:04x}")).join(":")
                    })
                    .collect();
                tokio::spawn(
                    async move { client.lookup_batch(pb::LookupBatchRequest { ips, allow_remote: false }).await },
                )
            })
            .collect();
        for call in calls {
            call.await.unwrap().expect("the ones beyond the gate wait their turn");
        }
    }
    still_answers(&geo).await;
    let peak = geo.peak_rss_kib();
    eprintln!("geo-service peak RSS after 10 rounds of 4 concurrent full batches: {peak} KiB");
    assert!(peak < rss_bound_kib(), "peak RSS {peak} KiB over {} KiB", rss_bound_kib());
}
