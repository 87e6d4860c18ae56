//! The HTTP fallback end to end: the real binary against a local server
//! that speaks ip-api's protocol (the only stand-in in the suite: the real
//! ip-api is on the internet).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bangui_e2e::{
    GeoService,
    ip_api::{FakeIpApi, Mode},
};
use bangui_proto::geo::v1::{self as pb, LookupStatus};

fn start(fake: &FakeIpApi, extra: &[&str]) -> GeoService {
    let url = fake.url();
    let mut args = vec!["--mmdb", "builtin:sample", "--http-fallback", "true", "--fallback-url", url.as_str()];
    args.extend_from_slice(extra);
    GeoService::start(&args)
}

async fn batch(geo: &GeoService, ips: &[String], allow_remote: bool) -> Vec<pb::LookupResult> {
    let request = pb::LookupBatchRequest { ips: ips.to_vec(), allow_remote };
    geo.client().await.lookup_batch(request).await.unwrap().into_inner().results
}

fn status(r: &pb::LookupResult) -> LookupStatus {
    LookupStatus::try_from(r.status).unwrap()
}

/// `n` distinct addresses in 3.0.0.0/8, which the sample database lacks.
fn unknown(n: u32, offset: u32) -> Vec<String> {
    (offset..offset + n).map(|i| format!("3.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)).collect()
}

#[tokio::test]
async fn a_250_address_request_goes_out_as_batches_of_at_most_100() {
    let fake = FakeIpApi::start().await;
    let geo = start(&fake, &[]);
    // 250 addresses nobody local knows (249 in 3/8, one the fake calls
    // "reserved range"), plus a reserved one and one the database knows:
    // neither of those two is sent.
    let mut ips = unknown(249, 1);
    ips.push("5.1.2.3".into());
    ips.push("10.0.0.1".into());
    ips.push("8.8.8.8".into());
    let results = batch(&geo, &ips, true).await;

    let seen = fake.seen();
    let sizes: Vec<usize> = seen.iter().map(|s| s.ips.len()).collect();
    assert_eq!(sizes, [100, 100, 50], "250 unknown addresses, at most 100 per request");
    assert!(seen.iter().all(|s| s.batch));
    let sent: Vec<&String> = seen.iter().flat_map(|s| &s.ips).collect();
    assert!(
        !sent.iter().any(|ip| *ip == "10.0.0.1" || *ip == "8.8.8.8"),
        "reserved and MMDB-known addresses stay home"
    );

    for r in &results[..249] {
        assert_eq!((status(r), r.country_code.as_str()), (LookupStatus::Found, "CA"), "{}", r.ip);
        assert_eq!(r.source, pb::ResultSource::Http as i32);
        assert_eq!((r.asn, r.as_org.as_str()), (16509, "Amazon.com, Inc."));
    }
    assert_eq!(status(&results[249]), LookupStatus::NotFound, "ip-api's 'reserved range' is a negative");
    assert_eq!(status(&results[250]), LookupStatus::Reserved);
    assert_eq!(results[251].source, pb::ResultSource::Mmdb as i32);

    // Asked again: answered from the cache, nothing sent.
    let again = batch(&geo, &ips[..10], true).await;
    assert!(again.iter().all(|r| r.source == pb::ResultSource::Cache as i32 && r.country_code == "CA"));
    assert_eq!(fake.seen().len(), 3);
    let metrics = geo.metrics_text().await;
    for line in [
        "geo_fallback_requests_total{result=\"ok\"} 3",
        "geo_cache_lookups_total{result=\"hit\"} 10",
        "geo_cache_entries{kind=\"answers\"} 249",
        "geo_cache_entries{kind=\"negatives\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn nothing_leaves_without_allow_remote_and_one_address_uses_the_single_endpoint() {
    let fake = FakeIpApi::start().await;
    let geo = start(&fake, &[]);
    let results = batch(&geo, &unknown(5, 1), false).await;
    assert!(results.iter().all(|r| status(r) == LookupStatus::NotFound));
    assert!(fake.seen().is_empty(), "allow_remote=false sends nothing");

    let mut client = geo.client().await;
    let one = client.lookup(pb::LookupRequest { ip: "2a01:4f8::1".into(), allow_remote: true }).await.unwrap();
    assert_eq!(one.into_inner().result.unwrap().country_code, "DE");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].batch, "a single address uses GET /json/{{ip}}");
}

#[tokio::test]
async fn the_client_side_budget_is_never_exceeded() {
    let fake = FakeIpApi::start().await;
    let geo = start(&fake, &["--fallback-batch-per-minute", "2"]);
    // 350 addresses need 4 requests; the budget allows 2 this minute.
    let results = batch(&geo, &unknown(350, 1), true).await;
    assert_eq!(fake.seen().len(), 2);
    let found = results.iter().filter(|r| status(r) == LookupStatus::Found).count();
    let upstream: Vec<&pb::LookupResult> =
        results.iter().filter(|r| status(r) == LookupStatus::UpstreamError).collect();
    assert_eq!((found, upstream.len()), (200, 150));
    assert!(upstream[0].error.contains("budget"), "{}", upstream[0].error);
    // Still used up: nothing more goes out.
    batch(&geo, &unknown(150, 1_000), true).await;
    assert_eq!(fake.seen().len(), 2);
    let info = geo.client().await.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    let fallback = info.fallback.unwrap();
    assert!(fallback.enabled && fallback.batch_tokens < 1.0 && fallback.requests == 2, "{fallback:?}");
}

#[tokio::test]
async fn a_429_opens_the_breaker_for_x_ttl() {
    let fake = FakeIpApi::start().await;
    fake.set_mode(Mode::RateLimited { ttl: 30 });
    let geo = start(&fake, &[]);
    let first = batch(&geo, &unknown(3, 1), true).await;
    assert!(first.iter().all(|r| status(r) == LookupStatus::UpstreamError), "{first:?}");
    assert!(first[0].error.contains("429"), "{}", first[0].error);
    // The breaker is open: nothing is sent, every item says why.
    fake.set_mode(Mode::Normal);
    let second = batch(&geo, &unknown(3, 10), true).await;
    assert!(second.iter().all(|r| status(r) == LookupStatus::UpstreamError && r.error.contains("paused")));
    assert_eq!(fake.seen().len(), 1, "a 429 is not retried");
    let info = geo.client().await.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    let open = info.fallback.unwrap().breaker_open_seconds;
    assert!(open > 20.0 && open <= 30.0, "{open}");
    // The alert rule GeoFallbackBreakerOpen reads this gauge.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let until = geo.metric("geo_fallback_breaker_open_until_seconds").await.unwrap();
    assert!(until > now + 20.0 && until <= now + 32.0, "open until {until}, now {now}");
}

#[tokio::test]
async fn slow_and_malformed_replies_fail_the_items_not_the_batch() {
    let fake = FakeIpApi::start().await;
    fake.set_mode(Mode::Slow(std::time::Duration::from_secs(5)));
    let geo = start(&fake, &["--fallback-timeout", "300ms", "--fallback-retries", "1"]);
    let mut ips = unknown(3, 1);
    ips.push("8.8.8.8".into());
    let slow = batch(&geo, &ips, true).await;
    assert!(slow[..3].iter().all(|r| status(r) == LookupStatus::UpstreamError && r.error.contains("did not answer")));
    assert_eq!(status(&slow[3]), LookupStatus::Found, "the rest of the batch is answered");
    assert_eq!(fake.seen().len(), 2, "one retry after the timeout");

    fake.set_mode(Mode::Malformed);
    let bad = batch(&geo, &unknown(3, 100), true).await;
    assert!(bad.iter().all(|r| status(r) == LookupStatus::UpstreamError && r.error.contains("malformed")), "{bad:?}");
    // Failures are not cached: once the API is back, the same addresses are placed.
    fake.set_mode(Mode::Normal);
    let good = batch(&geo, &unknown(3, 100), true).await;
    assert!(good.iter().all(|r| status(r) == LookupStatus::Found));
}

#[tokio::test]
async fn fallback_answers_survive_a_restart_and_are_not_asked_again() {
    let fake = FakeIpApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("geo.db").display());
    let ips = vec!["3.9.9.9".to_string(), "5.5.5.6".to_string(), "2a01:4f8::7".to_string()];

    let geo = start(&fake, &["--database-url", &db, "--flush-interval", "1h"]);
    let first = batch(&geo, &ips, true).await;
    assert_eq!(
        first.iter().map(status).collect::<Vec<_>>(),
        [LookupStatus::Found, LookupStatus::NotFound, LookupStatus::Found]
    );
    assert_eq!(fake.seen().len(), 1);
    assert!(geo.shutdown().await.success());

    let geo = start(&fake, &["--database-url", &db]);
    let again = batch(&geo, &ips, true).await;
    assert_eq!(fake.seen().len(), 1, "the restarted service answers from its persistent cache");
    assert_eq!((again[0].source, again[0].country_code.as_str()), (pb::ResultSource::Cache as i32, "CA"));
    assert_eq!(status(&again[1]), LookupStatus::NotFound);
    assert_eq!((again[2].source, again[2].country_code.as_str()), (pb::ResultSource::Cache as i32, "DE"));
    let info = geo.client().await.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner().cache.unwrap();
    assert_eq!((info.persistent_rows, info.persistent_negatives), (3, 1));
}

#[tokio::test]
async fn enabling_the_fallback_warns_that_addresses_leave_unencrypted() {
    let fake = FakeIpApi::start().await;
    let geo = start(&fake, &[]);
    assert!(geo.logs().iter().any(|l| l.contains("HTTP fallback enabled") && l.contains("unencrypted")));
}

#[tokio::test]
async fn re_resolve_asks_the_fallback_for_negatives() {
    let fake = FakeIpApi::start().await;
    let geo = start(&fake, &[]);
    // The fallback cannot place either today: both become negatives.
    fake.set_unplaceable(&["3.7.7.7"]);
    batch(&geo, &["3.7.7.7".to_string(), "5.7.7.7".to_string()], true).await;
    assert_eq!(fake.seen().len(), 1);
    // Later it knows 3.7.7.7.
    fake.set_unplaceable(&[]);
    let mut client = geo.client().await;
    let reply = client.re_resolve(pb::ReResolveRequest { limit: 10 }).await.unwrap().into_inner();
    assert_eq!((reply.attempted, reply.resolved), (2, 1), "3.7.7.7 placed, 5.7.7.7 still unknown");
    assert_eq!(fake.seen().len(), 2);
    let cache = client.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner().cache.unwrap();
    assert_eq!((cache.persistent_rows, cache.persistent_negatives), (2, 1));
    let now = batch(&geo, &["3.7.7.7".to_string()], false).await;
    assert_eq!((now[0].country_code.as_str(), now[0].source), ("CA", pb::ResultSource::Cache as i32));
}

/// The defect of issue 12: a lookup that did not allow the fallback used
/// to record a negative that then stopped every later lookup from asking.
#[tokio::test]
async fn a_lookup_without_allow_remote_does_not_stop_a_later_one_from_asking() {
    let fake = FakeIpApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("geo.db").display());
    async fn lookup(geo: &GeoService, allow_remote: bool) -> pb::LookupResult {
        let request = pb::LookupRequest { ip: "2a03:2880:f12f:83:face:b00c:0:25de".into(), allow_remote };
        geo.client().await.lookup(request).await.unwrap().into_inner().result.unwrap()
    }

    let geo = start(&fake, &["--database-url", &db, "--flush-interval", "1h"]);
    let first = lookup(&geo, false).await;
    assert_eq!(status(&first), LookupStatus::NotFound);
    assert!(fake.seen().is_empty());

    let second = lookup(&geo, true).await;
    assert_eq!((status(&second), second.country_code.as_str()), (LookupStatus::Found, "DE"));
    assert_eq!(second.source, pb::ResultSource::Http as i32);
    assert_eq!(fake.seen().len(), 1, "the fallback was asked once");

    let third = lookup(&geo, true).await;
    assert_eq!((third.source, third.country_code.as_str()), (pb::ResultSource::Cache as i32, "DE"));
    assert_eq!(fake.seen().len(), 1, "the third call is served from the cache");
    assert!(geo.shutdown().await.success());

    let geo = start(&fake, &["--database-url", &db]);
    let after_restart = lookup(&geo, true).await;
    assert_eq!((after_restart.source, after_restart.country_code.as_str()), (pb::ResultSource::Cache as i32, "DE"));
    assert_eq!(fake.seen().len(), 1, "after a restart the answer comes from the persistent cache");
}

/// A negative an older version wrote for a database miss (source 'none')
/// says nothing: an older replica may still write one during a rollout.
#[tokio::test]
async fn negatives_of_an_older_version_do_not_block_the_fallback() {
    let fake = FakeIpApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("geo.db").display());
    let geo = start(&fake, &["--database-url", &db]);
    assert!(geo.shutdown().await.success());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query(
        "INSERT INTO geo_cache (ip, country_code, source, resolved_at, last_seen) VALUES ('3.4.5.6', NULL, 'none', 1, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let geo = start(&fake, &["--database-url", &db]);
    let results = batch(&geo, &["3.4.5.6".to_string(), "3.4.5.7".to_string()], true).await;
    assert!(results.iter().all(|r| r.country_code == "CA" && r.source == pb::ResultSource::Http as i32));
    assert_eq!(fake.seen()[0].ips, ["3.4.5.6", "3.4.5.7"]);
}

#[tokio::test]
async fn a_huge_x_ttl_pauses_for_at_most_an_hour_and_nothing_panics() {
    let fake = FakeIpApi::start().await;
    fake.set_mode(Mode::HugeTtl);
    let geo = start(&fake, &[]);
    let first = batch(&geo, &unknown(3, 1), true).await;
    assert!(first.iter().all(|r| status(r) == LookupStatus::UpstreamError && r.error.contains("429")), "{first:?}");
    let info = geo.client().await.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    let open = info.fallback.unwrap().breaker_open_seconds;
    assert!(open > 3_500.0 && open <= 3_600.0, "{open}");
    // Still serving: the database answers, the fallback is paused.
    let again = batch(&geo, &["8.8.8.8".to_string(), "3.0.0.9".to_string()], true).await;
    assert_eq!(status(&again[0]), LookupStatus::Found);
    assert!(again[1].error.contains("paused"), "{:?}", again[1]);
    assert!(geo.is_running());
}

#[tokio::test]
async fn a_10_mb_reply_fails_the_request_without_being_read_whole() {
    let fake = FakeIpApi::start().await;
    fake.set_mode(Mode::HugeBody);
    let geo = start(&fake, &["--fallback-retries", "0"]);
    let before = geo.peak_rss_kib();
    let results = batch(&geo, &unknown(3, 1), true).await;
    assert!(results.iter().all(|r| status(r) == LookupStatus::UpstreamError && r.error.contains("larger than")));
    let grown = geo.peak_rss_kib().saturating_sub(before);
    assert!(grown < 8 * 1024, "peak RSS grew {grown} KiB reading a 10 MB reply");
    // Nothing was cached: once the reply is sane the addresses are placed.
    fake.set_mode(Mode::Normal);
    assert!(batch(&geo, &unknown(3, 1), true).await.iter().all(|r| status(r) == LookupStatus::Found));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let fake = FakeIpApi::start().await;
    fake.set_mode(Mode::Redirect);
    let geo = start(&fake, &[]);
    let results = batch(&geo, &unknown(2, 1), true).await;
    assert!(results.iter().all(|r| status(r) == LookupStatus::UpstreamError && r.error.contains("302")), "{results:?}");
    assert_eq!(fake.seen().len(), 1, "the redirect target was never requested");
}

#[tokio::test]
async fn the_api_key_is_sent_and_never_logged() {
    let fake = FakeIpApi::start().await;
    let geo = start(&fake, &["--fallback-api-key", "k3y-s3cr3t"]);
    batch(&geo, &unknown(2, 1), true).await;
    assert_eq!(fake.seen()[0].key.as_deref(), Some("k3y-s3cr3t"));
    // A failing request's error (which names the request) does not carry it either.
    fake.set_mode(Mode::Slow(std::time::Duration::from_secs(5)));
    let geo_slow = start(&fake, &["--fallback-api-key", "k3y-s3cr3t", "--fallback-timeout", "200ms"]);
    let failed = batch(&geo_slow, &unknown(2, 50), true).await;
    assert!(failed.iter().all(|r| status(r) == LookupStatus::UpstreamError && !r.error.contains("k3y")));
    for logs in [geo.logs(), geo_slow.logs()] {
        assert!(logs.iter().any(|l| l.contains("--fallback-api-key goes over plain HTTP")));
        assert!(!logs.iter().any(|l| l.contains("k3y-s3cr3t")), "{logs:?}");
    }
}

/// ip-api's paid plan over TLS: the addresses and the key go over HTTPS to
/// a server whose certificate the system trust store (here
/// `SSL_CERT_FILE`, the test CA) vouches for.
#[tokio::test]
async fn the_paid_endpoint_is_reached_over_https_with_the_key() {
    let pki = bangui_e2e::tls::Pki::new();
    let fake = FakeIpApi::start_tls(&pki.path("server.pem"), &pki.path("server.key")).await;
    let url = fake.url();
    assert!(url.starts_with("https://"));
    let ca = pki.arg("ca.pem");
    let args = ["--mmdb", "builtin:sample", "--http-fallback", "true", "--fallback-url", &url];
    let key = ["--fallback-api-key", "k3y-over-tls"];
    let geo = GeoService::start_with_env(&[("SSL_CERT_FILE", &ca)], &[&args[..], &key[..]].concat());
    let results = batch(&geo, &unknown(2, 1), true).await;
    assert!(results.iter().all(|r| r.country_code == "CA" && r.source == pb::ResultSource::Http as i32), "{results:?}");
    assert_eq!(fake.seen()[0].key.as_deref(), Some("k3y-over-tls"));
    assert!(!geo.logs().iter().any(|l| l.contains("goes over plain HTTP")));

    // Without the test CA in the trust store, the certificate is refused and nothing is sent.
    let untrusted = GeoService::start(&[&args[..], &key[..]].concat());
    let refused = batch(&untrusted, &unknown(2, 10), true).await;
    assert!(refused.iter().all(|r| status(r) == LookupStatus::UpstreamError), "{refused:?}");
    assert_eq!(fake.seen().len(), 1);
}
