//! Hot reload through the real binary: a database replaced by rename (as
//! geoipupdate does) while lookups run; a corrupt replacement is refused and
//! the old build keeps answering; ReloadDatabases on demand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bangui_e2e::GeoService;
use bangui_proto::geo::v1::{self as pb, LookupStatus};
use tonic::Code;

/// Writes `bytes` beside `path` and renames it over `path`.
fn replace_by_rename(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("mmdb.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn build_epoch(geo: &GeoService) -> i64 {
    let info = geo.client().await.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    info.databases[0].build_time.unwrap().seconds
}

/// Polls `check` every 50 ms for up to 15 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_file_is_picked_up_under_load_and_a_corrupt_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("GeoIP2-Country.mmdb");
    std::fs::write(&path, bangui_testkit::maxmind_country()).unwrap();
    let geo = GeoService::start(&["--mmdb", &path.display().to_string()]);
    assert_eq!(build_epoch(&geo).await, bangui_testkit::BUILD_EPOCH as i64);

    // A steady load of lookups while the file is replaced twice.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut client = geo.client().await;
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let ips: Vec<String> = ["8.8.8.8", "81.2.69.160", "2001:4860::1", "10.1.1.1"].map(String::from).to_vec();
            while !stop.load(Ordering::Relaxed) {
                let request = pb::LookupBatchRequest { ips: ips.clone(), allow_remote: false };
                let results =
                    client.lookup_batch(request).await.expect("no lookup fails during a reload").into_inner().results;
                let statuses: Vec<i32> = results.iter().map(|r| r.status).collect();
                let found = LookupStatus::Found as i32;
                assert_eq!(statuses, [found, found, found, LookupStatus::Reserved as i32]);
                assert_eq!(results[0].country_code, "US");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    eventually("lookups running", || async { done.load(Ordering::Relaxed) > 10 }).await;

    replace_by_rename(&path, &bangui_testkit::maxmind_country_next_build());
    eventually("the new build in GetInfo", || async {
        build_epoch(&geo).await == bangui_testkit::NEXT_BUILD_EPOCH as i64
    })
    .await;
    // The new build's data answers.
    let mut client = geo.client().await;
    let canada = client.lookup(pb::LookupRequest { ip: "3.3.3.3".into(), allow_remote: false }).await.unwrap();
    assert_eq!(canada.into_inner().result.unwrap().country_code, "CA");

    // A corrupt replacement: refused, counted, and the last good build serves on.
    replace_by_rename(&path, b"not a MaxMind database at all");
    eventually("the refused reload in the metrics", || async {
        geo.metrics_text().await.contains("geo_database_reloads_total{result=\"failed\"} 1")
    })
    .await;
    assert_eq!(build_epoch(&geo).await, bangui_testkit::NEXT_BUILD_EPOCH as i64);
    let before = done.load(Ordering::Relaxed);
    eventually("lookups still answering", || async { done.load(Ordering::Relaxed) > before + 10 }).await;

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let body = geo.metrics_text().await;
    assert!(body.contains("geo_database_reloads_total{result=\"ok\"} 1"), "{body}");
    assert!(body.contains("geo_database_build_age_seconds{"), "{body}");
    assert!(
        geo.logs().iter().any(|l| l.contains("database reload refused") && l.contains("GeoIP2-Country.mmdb")),
        "the refusal names the file"
    );
}

#[tokio::test]
async fn reload_databases_on_demand_reports_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("country.mmdb");
    std::fs::write(&path, bangui_testkit::maxmind_country()).unwrap();
    let geo = GeoService::start(&["--mmdb", &path.display().to_string(), "--watch", "false"]);
    let mut client = geo.client().await;

    // Written in place (no watcher): only an explicit reload picks it up.
    std::fs::write(&path, bangui_testkit::maxmind_country_next_build()).unwrap();
    assert_eq!(build_epoch(&geo).await, bangui_testkit::BUILD_EPOCH as i64);
    let reply = client.reload_databases(pb::ReloadDatabasesRequest {}).await.unwrap().into_inner();
    assert_eq!(reply.databases[0].build_time.unwrap().seconds, bangui_testkit::NEXT_BUILD_EPOCH as i64);

    std::fs::remove_file(&path).unwrap();
    let err = client.reload_databases(pb::ReloadDatabasesRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("country.mmdb"), "{}", err.message());
    let still = client.lookup(pb::LookupRequest { ip: "3.3.3.3".into(), allow_remote: false }).await.unwrap();
    assert_eq!(still.into_inner().result.unwrap().country_code, "CA", "the loaded build keeps serving");
}
