//! geo-service through the real `grpcurl`, the way operators debug it:
//! reflection (`list`, `describe`), lookups, and the health check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bangui_e2e::{GeoService, grpcurl, grpcurl_json};

fn sample() -> GeoService {
    GeoService::start(&["--mmdb", "builtin:sample"])
}

#[test]
fn list_shows_the_geo_service_health_and_reflection() {
    let geo = sample();
    let addr = geo.grpc_addr.to_string();
    let out = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let services = String::from_utf8_lossy(&out.stdout);
    for service in ["bangui.geo.v1.GeoService", "grpc.health.v1.Health"] {
        assert!(services.lines().any(|l| l == service), "{service} missing from:\n{services}");
    }
    let methods = grpcurl(&["-plaintext", &addr, "list", "bangui.geo.v1.GeoService"]);
    let methods = String::from_utf8_lossy(&methods.stdout);
    for method in ["Lookup", "LookupBatch", "LookupStream", "GetInfo"] {
        assert!(methods.contains(&format!("bangui.geo.v1.GeoService.{method}")), "{methods}");
    }
}

#[test]
fn describe_shows_the_result_message_fields() {
    let geo = sample();
    let out = grpcurl(&["-plaintext", &geo.grpc_addr.to_string(), "describe", "bangui.geo.v1.LookupResult"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for field in [
        "string ip",
        ".bangui.geo.v1.LookupStatus status",
        "string country_code",
        "string country_name",
        "string continent_code",
        "string registered_country_code",
        "uint32 asn",
        "string as_org",
        "string network",
        ".bangui.geo.v1.ResultSource source",
        "string database",
        ".google.protobuf.Timestamp database_build_time",
        "string error",
    ] {
        assert!(text.contains(field), "{field} missing from:\n{text}");
    }
}

#[test]
fn lookup_and_batch_through_grpcurl() {
    let geo = sample();
    let addr = geo.grpc_addr.to_string();
    let one = grpcurl_json(&["-plaintext", "-d", r#"{"ip": "8.8.8.8"}"#, &addr, "bangui.geo.v1.GeoService/Lookup"]);
    let result = &one["result"];
    assert_eq!(result["countryCode"], "US");
    assert_eq!(result["asn"], 15169);
    assert_eq!(result["status"], "LOOKUP_STATUS_FOUND");
    assert_eq!(result["network"], "8.8.8.0/24");
    assert_eq!(result["databaseBuildTime"], "2023-11-14T22:13:20Z");

    let batch = grpcurl_json(&[
        "-plaintext",
        "-d",
        r#"{"ips": ["1.1.1.1", "bogus", "192.168.1.1", "2001:4860:4860::8888", "3.3.3.3"]}"#,
        &addr,
        "bangui.geo.v1.GeoService/LookupBatch",
    ]);
    let results = batch["results"].as_array().unwrap();
    let statuses: Vec<&str> = results.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        [
            "LOOKUP_STATUS_FOUND",
            "LOOKUP_STATUS_INVALID",
            "LOOKUP_STATUS_RESERVED",
            "LOOKUP_STATUS_FOUND",
            "LOOKUP_STATUS_NOT_FOUND"
        ]
    );
    assert_eq!(results[0]["countryCode"], "AU");
    assert_eq!(results[2]["reservedRange"], "RESERVED_RANGE_PRIVATE");
    assert_eq!(results[3]["ip"], "2001:4860:4860::8888");
    assert_eq!(results[3]["countryCode"], "US");

    let info = grpcurl_json(&["-plaintext", &addr, "bangui.geo.v1.GeoService/GetInfo"]);
    assert_eq!(info["databases"][0]["path"], "builtin:sample");
    assert_eq!(info["databases"][0]["schema"], "DATABASE_SCHEMA_MAXMIND");
}

#[test]
fn invalid_unary_lookup_is_invalid_argument() {
    let geo = sample();
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"ip": "999.1.1.1"}"#,
        &geo.grpc_addr.to_string(),
        "bangui.geo.v1.GeoService/Lookup",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Code: InvalidArgument") && err.contains("ip: not an IP address"), "{err}");
    // The field violation itself, decoded: reflection serves google.rpc.
    let details = bangui_e2e::grpcurl_error_details(&out);
    assert_eq!(details.len(), 1, "{err}");
    assert_eq!(details[0]["@type"], "type.googleapis.com/google.rpc.BadRequest", "{err}");
    assert_eq!(
        details[0]["fieldViolations"],
        serde_json::json!([{"field": "ip", "description": r#"not an IP address: "999.1.1.1""#}])
    );
}

#[test]
fn health_check_through_grpcurl() {
    let geo = sample();
    let addr = geo.grpc_addr.to_string();
    let overall = grpcurl_json(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert_eq!(overall["status"], "SERVING");
    let geo_health = grpcurl_json(&[
        "-plaintext",
        "-d",
        r#"{"service": "bangui.geo.v1.GeoService"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert_eq!(geo_health["status"], "SERVING");
    let unknown = grpcurl(&["-plaintext", "-d", r#"{"service": "nope"}"#, &addr, "grpc.health.v1.Health/Check"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("NotFound"));
}
