//! geo-service over gRPC with the generated client: the real binary, real
//! fixture databases of every schema, loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bangui_e2e::{GeoService, fixtures};
use bangui_proto::geo::v1::{self as pb, LookupStatus};
use tonic::Code;

fn start_all_schemas() -> (tempfile::TempDir, GeoService) {
    let (dir, f) = fixtures();
    let list = [&f.maxmind_country, &f.dbip_country, &f.flat_country_v4, &f.flat_country_v6, &f.ipinfo_lite, &f.asn]
        .map(|p| p.display().to_string())
        .join(",");
    let service = GeoService::start(&["--mmdb", &list]);
    (dir, service)
}

fn status(result: &pb::LookupResult) -> LookupStatus {
    LookupStatus::try_from(result.status).unwrap()
}

#[tokio::test]
async fn lookup_answers_from_the_merged_databases() {
    let (_dir, geo) = start_all_schemas();
    let mut client = geo.client().await;
    let result = client
        .lookup(pb::LookupRequest { ip: "8.8.8.8".into(), allow_remote: false })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(status(&result), LookupStatus::Found);
    assert_eq!(result.ip, "8.8.8.8");
    assert_eq!(result.country_code, "US");
    assert_eq!(result.country_name, "United States");
    assert_eq!(result.continent_code, "NA");
    assert_eq!(result.registered_country_code, "US");
    assert_eq!(result.asn, 15169, "ASN merged in from the ASN database");
    assert_eq!(result.as_org, "GOOGLE");
    assert_eq!(result.network, "8.8.8.0/24");
    assert_eq!(result.source, pb::ResultSource::Mmdb as i32);
    assert!(result.database.ends_with("GeoIP2-Country-Test.mmdb"), "{}", result.database);
    assert_eq!(result.database_build_time.unwrap().seconds, bangui_testkit::BUILD_EPOCH as i64);
}

#[tokio::test]
async fn batch_keeps_order_and_gives_each_item_its_own_status() {
    let (_dir, geo) = start_all_schemas();
    let mut client = geo.client().await;
    let inputs = [
        "81.2.69.160",    // nested GeoIP2
        "not-an-ip",      // invalid
        "10.0.0.1",       // reserved: private
        "2001:db8::1",    // reserved: documentation
        "1.1.1.1",        // DB-IP lite + ASN
        "",               // invalid: empty
        "9.9.9.9",        // flat IPv4 file
        "2620:fe::fe",    // flat IPv6 file
        "4.4.4.4",        // IPinfo lite
        "3.3.3.3",        // nowhere
        "::ffff:5.5.5.5", // IPv4-mapped: answered as IPv4, registered country
        "2A02:FF0::0:1",  // normalized IPv6
        "127.0.0.1",      // loopback
        "100.64.1.1",     // CGNAT
        "224.0.0.251",    // multicast
        "169.254.0.1",    // link-local
        "0.0.0.0",        // unspecified
    ];
    let results = client
        .lookup_batch(pb::LookupBatchRequest {
            ips: inputs.iter().map(|s| s.to_string()).collect(),
            allow_remote: false,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), inputs.len());
    for (input, result) in inputs.iter().zip(&results) {
        assert_eq!(result.input, *input, "results are in input order");
    }
    let expect = |i: usize, st: LookupStatus, country: &str| {
        assert_eq!((status(&results[i]), results[i].country_code.as_str()), (st, country), "item {i} {:?}", inputs[i]);
    };
    expect(0, LookupStatus::Found, "GB");
    expect(1, LookupStatus::Invalid, "");
    assert!(results[1].error.contains("not an IP address"), "{}", results[1].error);
    expect(2, LookupStatus::Reserved, "");
    assert_eq!(results[2].reserved_range, pb::ReservedRange::Private as i32);
    assert_eq!(results[2].source, pb::ResultSource::Local as i32);
    expect(3, LookupStatus::Reserved, "");
    assert_eq!(results[3].reserved_range, pb::ReservedRange::Documentation as i32);
    expect(4, LookupStatus::Found, "AU");
    assert_eq!(results[4].asn, 13335);
    expect(5, LookupStatus::Invalid, "");
    assert!(results[5].error.contains("empty"));
    expect(6, LookupStatus::Found, "CH");
    expect(7, LookupStatus::Found, "CH");
    assert_eq!(results[7].network, "2620:fe::/48");
    expect(8, LookupStatus::Found, "US");
    assert_eq!((results[8].asn, results[8].as_org.as_str()), (3356, "Level 3 Parent, LLC"));
    expect(9, LookupStatus::NotFound, "");
    assert_eq!(results[9].ip, "3.3.3.3");
    expect(10, LookupStatus::Found, "DE");
    assert_eq!(results[10].ip, "5.5.5.5");
    expect(11, LookupStatus::Found, "FR");
    assert_eq!(results[11].ip, "2a02:ff0::1");
    for (i, range) in [
        (12, pb::ReservedRange::Loopback),
        (13, pb::ReservedRange::Cgnat),
        (14, pb::ReservedRange::Multicast),
        (15, pb::ReservedRange::LinkLocal),
        (16, pb::ReservedRange::UnspecifiedAddress),
    ] {
        expect(i, LookupStatus::Reserved, "");
        assert_eq!(results[i].reserved_range, range as i32, "item {i}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let (_dir, geo) = start_all_schemas();
    let mut client = geo.client().await;

    let err = client.lookup(pb::LookupRequest { ip: "garbage".into(), allow_remote: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("ip: not an IP address"), "{}", err.message());

    let err = client.lookup(pb::LookupRequest { ip: String::new(), allow_remote: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // 100 000 items: over the default limit of 10 000, refused whole: by
    // the transport (1.4 MB is over the batch's decode limit) before it is
    // decoded, with the limit in the message.
    let ips: Vec<String> =
        (0..100_000u32).map(|i| std::net::Ipv4Addr::from(i.wrapping_mul(2_654_435_761)).to_string()).collect();
    let err = client.lookup_batch(pb::LookupBatchRequest { ips, allow_remote: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("10000") && err.message().contains("ips"), "{}", err.message());
    // 10 001 short items fit the decode limit: refused by the count.
    let ips: Vec<String> = vec![String::new(); 10_001];
    let err = client.lookup_batch(pb::LookupBatchRequest { ips, allow_remote: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("10000") && err.message().contains("ips"), "{}", err.message());

    // The service is still fine afterwards, and the limit itself is accepted.
    let ips: Vec<String> = (0..10_000u32).map(|i| format!("garbage-{i}")).collect();
    let results =
        client.lookup_batch(pb::LookupBatchRequest { ips, allow_remote: false }).await.unwrap().into_inner().results;
    assert_eq!(results.len(), 10_000);
    assert!(results.iter().all(|r| status(r) == LookupStatus::Invalid));
    let empty = client.lookup_batch(pb::LookupBatchRequest::default()).await.unwrap().into_inner().results;
    assert!(empty.is_empty());
}

#[tokio::test]
async fn batch_limit_is_configurable() {
    let geo = GeoService::start(&["--mmdb", "builtin:sample", "--max-batch", "3"]);
    let mut client = geo.client().await;
    let four: Vec<String> = ["1.1.1.1", "8.8.8.8", "9.9.9.9", "10.0.0.1"].map(String::from).to_vec();
    let err = client.lookup_batch(pb::LookupBatchRequest { ips: four.clone(), allow_remote: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit of 3"), "{}", err.message());
    let ok =
        client.lookup_batch(pb::LookupBatchRequest { ips: four[..3].to_vec(), allow_remote: false }).await.unwrap();
    assert_eq!(ok.into_inner().results.len(), 3);
    let info = client.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.max_batch_size, 3);
}

#[tokio::test]
async fn stream_answers_every_item_in_order() {
    let geo = GeoService::start(&["--mmdb", "builtin:sample"]);
    let mut client = geo.client().await;
    let inputs: Vec<String> =
        (0..5_000).map(|i| if i % 2 == 0 { "8.8.8.8".into() } else { format!("bad{i}") }).collect();
    let requests =
        tokio_stream::iter(inputs.clone().into_iter().map(|ip| pb::LookupStreamRequest { ip, allow_remote: false }));
    let mut stream = client.lookup_stream(requests).await.unwrap().into_inner();
    let mut seen = 0;
    while let Some(reply) = stream.message().await.unwrap() {
        let result = reply.result.unwrap();
        assert_eq!(result.input, inputs[seen]);
        let want = if seen % 2 == 0 { LookupStatus::Found } else { LookupStatus::Invalid };
        assert_eq!(status(&result), want);
        seen += 1;
    }
    assert_eq!(seen, inputs.len());
}

#[tokio::test]
async fn get_info_describes_databases_and_counts_lookups() {
    let (_dir, geo) = start_all_schemas();
    let mut client = geo.client().await;
    let ips = ["8.8.8.8", "3.3.3.3", "10.1.1.1", "x", "2001:4860::1"].map(String::from).to_vec();
    client.lookup_batch(pb::LookupBatchRequest { ips, allow_remote: false }).await.unwrap();
    let info = client.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    let schemas: Vec<_> = info.databases.iter().map(|d| pb::DatabaseSchema::try_from(d.schema).unwrap()).collect();
    use pb::DatabaseSchema as S;
    assert_eq!(schemas, [S::Maxmind, S::Maxmind, S::FlatCountry, S::FlatCountry, S::IpinfoLite, S::Asn]);
    let v4 = &info.databases[2];
    assert_eq!((v4.ip_version, v4.database_type.as_str()), (4, "ip-location-db-country"));
    assert!(info.databases.iter().all(|d| d.node_count > 0 && d.size_bytes > 0 && d.build_time.is_some()));
    assert!(info.databases[5].has_asn && !info.databases[5].has_country);
    let c = info.counters.unwrap();
    assert_eq!((c.found, c.not_found, c.reserved, c.invalid, c.upstream_error), (2, 1, 1, 1, 0));
    assert_eq!(info.max_batch_size, 10_000);
}

#[tokio::test]
async fn health_serves_and_sigterm_drains_then_exits_zero() {
    let geo = GeoService::start(&["--mmdb", "builtin:sample"]);
    let channel = tonic::transport::Channel::from_shared(geo.endpoint()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "bangui.geo.v1.GeoService"] {
        let reply =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(reply.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service:?}");
    }
    // Keep the client connection open: the server must tell it to go away
    // (HTTP/2 GOAWAY) and finish well inside the grace period.
    let (status, logs) = tokio::task::spawn_blocking(move || {
        let logs = geo.logs_handle();
        (geo.terminate(), logs)
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let logs = logs.lock().unwrap().join("\n");
    assert!(logs.contains("health NOT_SERVING, draining") && logs.contains("\"stopped\""), "{logs}");
    assert!(!logs.contains("grace period"), "drain hit the grace period: {logs}");
    drop(health);
}

#[tokio::test]
async fn metrics_endpoint_exposes_lookups_and_databases() {
    let geo = GeoService::start(&["--mmdb", "builtin:sample"]);
    let mut client = geo.client().await;
    client.lookup(pb::LookupRequest { ip: "8.8.8.8".into(), allow_remote: false }).await.unwrap();
    let body = geo.metrics_text().await;
    assert!(body.contains("geo_lookups_total{status=\"found\"} 1"), "{body}");
    assert!(body.contains("geo_database_build_timestamp_seconds{database=\"builtin:sample\""), "{body}");
    assert!(body.contains("geo_databases_loaded 1"), "{body}");
}
