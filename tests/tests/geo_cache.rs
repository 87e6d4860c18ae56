//! The persistent cache through the real binary, on SQLite and PostgreSQL:
//! the fallback's answers and negatives survive a restart, a database miss
//! nobody asked the fallback about is not stored, purge deletes what nobody
//! asked about, and ReResolve places former negatives once a newer database
//! knows them. The fallback is the local ip-api stand-in.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use bangui_e2e::{GeoService, PgSchema, fixtures, ip_api::FakeIpApi};
use bangui_proto::geo::v1::{self as pb, LookupStatus};
use tonic::Code;

async fn batch_with(geo: &GeoService, ips: &[&str], allow_remote: bool) -> Vec<pb::LookupResult> {
    let request = pb::LookupBatchRequest { ips: ips.iter().map(|s| s.to_string()).collect(), allow_remote };
    geo.client().await.lookup_batch(request).await.unwrap().into_inner().results
}

async fn batch(geo: &GeoService, ips: &[&str]) -> Vec<pb::LookupResult> {
    batch_with(geo, ips, false).await
}

async fn cache_info(geo: &GeoService) -> pb::CacheInfo {
    geo.client().await.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner().cache.unwrap()
}

async fn purge(geo: &GeoService, seconds: i64) -> u64 {
    let request = pb::PurgeStaleRequest { older_than: Some(prost_types::Duration { seconds, nanos: 0 }) };
    geo.client().await.purge_stale(request).await.unwrap().into_inner().deleted
}

/// Only the shutdown flush writes (the interval is an hour), so what the
/// restart finds proves the final flush.
fn start(url: &str, mmdb: &str, fake: &FakeIpApi) -> GeoService {
    let fallback = fake.url();
    GeoService::start(&[
        "--mmdb",
        mmdb,
        "--database-url",
        url,
        "--flush-interval",
        "1h",
        "--http-fallback",
        "true",
        "--fallback-url",
        &fallback,
    ])
}

async fn answers_survive_a_restart_and_purge_counts_them(url: &str, backend: &str) {
    let fake = FakeIpApi::start().await;
    let geo = start(url, "builtin:sample", &fake);
    // Not asked of the fallback: nothing to remember.
    let unasked = batch(&geo, &["3.3.3.3", "2a01:4f8::1"]).await;
    assert!(unasked.iter().all(|r| r.status == LookupStatus::NotFound as i32));
    assert_eq!(cache_info(&geo).await.pending_writes, 0, "a database miss is not a negative");

    // 5.x is "reserved range" to the fallback (a negative), 3.x Canada.
    let results = batch_with(&geo, &["5.5.5.5", "3.3.3.3", "8.8.8.8", "10.0.0.1"], true).await;
    let statuses: Vec<_> = results.iter().map(|r| LookupStatus::try_from(r.status).unwrap()).collect();
    use LookupStatus as S;
    assert_eq!(statuses, [S::NotFound, S::Found, S::Found, S::Reserved]);
    assert_eq!(fake.seen().len(), 1, "one batch request for the two database misses");
    let info = cache_info(&geo).await;
    assert_eq!(info.backend, backend);
    assert_eq!((info.persistent_rows, info.memory_answers, info.memory_negatives, info.pending_writes), (0, 1, 1, 2));
    assert!(geo.shutdown().await.success());

    let geo = start(url, "builtin:sample", &fake);
    let info = cache_info(&geo).await;
    assert_eq!((info.persistent_rows, info.persistent_negatives), (2, 1), "written at shutdown");
    let again = batch_with(&geo, &["5.5.5.5", "3.3.3.3"], true).await;
    assert_eq!(again[0].status, LookupStatus::NotFound as i32);
    assert_eq!((again[1].country_code.as_str(), again[1].source), ("CA", pb::ResultSource::Cache as i32));
    assert_eq!(fake.seen().len(), 1, "the fallback is not asked again");
    assert_eq!(cache_info(&geo).await.negative_hits, 1, "answered from the persistent cache");

    // Missing or negative older_than: refused, nothing deleted.
    let err = geo.client().await.purge_stale(pb::PurgeStaleRequest { older_than: None }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("older_than"), "{}", err.message());
    let negative = pb::PurgeStaleRequest { older_than: Some(prost_types::Duration { seconds: -5, nanos: 0 }) };
    assert_eq!(geo.client().await.purge_stale(negative).await.unwrap_err().code(), Code::InvalidArgument);

    // Seen within the hour: both stay.
    assert_eq!(purge(&geo, 3_600).await, 0);
    assert_eq!(cache_info(&geo).await.persistent_rows, 2);
    // Once the clock has moved past the second they were last seen in,
    // "not seen for 0 s" covers both.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert_eq!(purge(&geo, 0).await, 2);
    let info = cache_info(&geo).await;
    assert_eq!((info.persistent_rows, info.memory_negatives), (0, 0));
}

#[tokio::test]
async fn sqlite_answers_survive_a_restart_and_purge_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("geo.db").display());
    answers_survive_a_restart_and_purge_counts_them(&url, "sqlite").await;
}

#[tokio::test]
async fn postgres_answers_survive_a_restart_and_purge_counts_them() {
    let schema = PgSchema::create("geo_e2e").await;
    answers_survive_a_restart_and_purge_counts_them(&schema.url(), "postgres").await;
}

#[tokio::test]
async fn re_resolve_places_former_negatives_with_a_newer_database() {
    let (_fixtures, f) = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("geo.db").display());
    let fake = FakeIpApi::start().await;
    fake.set_unplaceable(&["8.8.8.8", "3.3.3.3"]);

    // The flat IPv4 file does not know 8.8.8.8 or 3.3.3.3, nor does the fallback.
    let geo = start(&url, &f.flat_country_v4.display().to_string(), &fake);
    batch_with(&geo, &["8.8.8.8", "3.3.3.3"], true).await;
    assert!(geo.shutdown().await.success());

    // A newer database knows 8.8.8.8.
    let geo = start(&url, &f.maxmind_country.display().to_string(), &fake);
    let mut client = geo.client().await;
    let err = client.re_resolve(pb::ReResolveRequest { limit: 1_000_000 }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let reply = client.re_resolve(pb::ReResolveRequest { limit: 0 }).await.unwrap().into_inner();
    assert_eq!((reply.attempted, reply.resolved), (2, 1));
    let info = cache_info(&geo).await;
    assert_eq!((info.persistent_rows, info.persistent_negatives), (1, 1), "the placed address left the cache");
    let again = client.re_resolve(pb::ReResolveRequest { limit: 10 }).await.unwrap().into_inner();
    assert_eq!((again.attempted, again.resolved), (1, 0));
    assert_eq!(batch(&geo, &["8.8.8.8"]).await[0].country_code, "US");
}
