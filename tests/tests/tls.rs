//! TLS and mTLS on both services, with certificates made in the test
//! (rcgen): plaintext refused by a TLS server, a client without a
//! certificate (or with one from another CA) refused under mTLS, grpcurl
//! with -cacert/-cert/-key, the geo-service's bearer token, and the
//! control-service reaching the geo-service over mTLS with the token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bangui_e2e::{ControlService, GeoService, fail2ban::Fail2banServer, grpcurl, grpcurl_json, tls::Pki};
use bangui_proto::{
    control::v1 as cpb,
    geo::v1::{LookupRequest, geo_service_client::GeoServiceClient},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn lookup() -> LookupRequest {
    LookupRequest { ip: "8.8.8.8".into(), allow_remote: false }
}

async fn tls_channel(port: u16, pki: &Pki, identity: Option<(&str, &str)>) -> Result<Channel, tonic::transport::Error> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read("ca.pem"))).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(pki.read(cert), pki.read(key)));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}")).unwrap().tls_config(tls).unwrap().connect().await
}

/// Lookup over `channel`, or the error text (a failed handshake shows up
/// at connect or at the first call, depending on the TLS version).
async fn try_lookup(channel: Result<Channel, tonic::transport::Error>) -> Result<String, String> {
    let channel = channel.map_err(|e| format!("connect: {e:?}"))?;
    GeoServiceClient::new(channel)
        .lookup(lookup())
        .await
        .map(|r| r.into_inner().result.unwrap().country_code)
        .map_err(|s| format!("{s:?}"))
}

/// A geo-service on the sample database serving TLS with the test
/// certificate, plus `extra` flags.
fn tls_geo(pki: &Pki, extra: &[&str]) -> GeoService {
    let (cert, key) = (pki.arg("server.pem"), pki.arg("server.key"));
    let mut args = vec!["--mmdb", "builtin:sample", "--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    args.extend_from_slice(extra);
    GeoService::start(&args)
}

/// grpcurl over TLS trusting the test CA (and presenting `client` if
/// given), with `rest` appended.
fn grpcurl_tls(pki: &Pki, client: Option<(&str, &str)>, rest: &[&str]) -> serde_json::Value {
    let mut args = vec!["-cacert".to_owned(), pki.arg("ca.pem"), "-authority".to_owned(), "localhost".to_owned()];
    if let Some((cert, key)) = client {
        args.extend(["-cert".to_owned(), pki.arg(cert), "-key".to_owned(), pki.arg(key)]);
    }
    args.extend(rest.iter().map(|s| s.to_string()));
    grpcurl_json(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test]
async fn geo_service_over_tls_refuses_plaintext() {
    let pki = Pki::new();
    let geo = tls_geo(&pki, &[]);
    let port = geo.grpc_addr.port();
    assert_eq!(try_lookup(tls_channel(port, &pki, None).await).await, Ok("US".into()));

    let plain = GeoServiceClient::connect(format!("http://127.0.0.1:{port}")).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut client) => client.lookup(lookup()).await.is_err(),
    };
    assert!(refused, "a plaintext client got an answer from a TLS server");

    let addr = format!("127.0.0.1:{port}");
    let out = grpcurl(&["-plaintext", "-connect-timeout", "2", &addr, "list"]);
    assert!(!out.status.success(), "grpcurl -plaintext against TLS succeeded");
    let json = grpcurl_tls(&pki, None, &["-d", r#"{"ip": "8.8.8.8"}"#, &addr, "bangui.geo.v1.GeoService/Lookup"]);
    assert_eq!(json["result"]["countryCode"], "US");
}

#[tokio::test]
async fn geo_service_under_mtls_wants_a_client_certificate_from_its_ca() {
    let pki = Pki::new();
    let geo = tls_geo(&pki, &["--tls-client-ca", &pki.arg("ca.pem")]);
    let port = geo.grpc_addr.port();
    assert!(try_lookup(tls_channel(port, &pki, None).await).await.is_err(), "no client certificate");
    assert!(
        try_lookup(tls_channel(port, &pki, Some(("other-client.pem", "other-client.key"))).await).await.is_err(),
        "a certificate from another CA"
    );
    assert_eq!(try_lookup(tls_channel(port, &pki, Some(("client.pem", "client.key"))).await).await, Ok("US".into()));

    let addr = format!("127.0.0.1:{port}");
    let without =
        grpcurl(&["-connect-timeout", "2", "-cacert", &pki.arg("ca.pem"), "-authority", "localhost", &addr, "list"]);
    assert!(!without.status.success(), "grpcurl without a client certificate got in");
    let json = grpcurl_tls(
        &pki,
        Some(("client.pem", "client.key")),
        &["-d", r#"{"ip": "81.2.69.160"}"#, &addr, "bangui.geo.v1.GeoService/Lookup"],
    );
    assert_eq!(json["result"]["countryCode"], "GB");
}

#[tokio::test]
async fn geo_auth_token_guards_every_geo_rpc_but_health_and_reflection() {
    let geo = GeoService::start(&["--mmdb", "builtin:sample", "--auth-token", "s3rvice-to-s3rvice"]);
    let addr = geo.grpc_addr.to_string();
    let err = geo.client().await.lookup(lookup()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let wrong = grpcurl(&[
        "-plaintext",
        "-H",
        "authorization: Bearer nope",
        "-d",
        r#"{"ip": "8.8.8.8"}"#,
        &addr,
        "bangui.geo.v1.GeoService/Lookup",
    ]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("Unauthenticated"));
    let json = grpcurl_json(&[
        "-plaintext",
        "-H",
        "authorization: Bearer s3rvice-to-s3rvice",
        "-d",
        r#"{"ip": "8.8.8.8"}"#,
        &addr,
        "bangui.geo.v1.GeoService/Lookup",
    ]);
    assert_eq!(json["result"]["countryCode"], "US");
    // Open: health and reflection.
    assert_eq!(grpcurl_json(&["-plaintext", &addr, "grpc.health.v1.Health/Check"])["status"], "SERVING");
    assert!(grpcurl(&["-plaintext", &addr, "list"]).status.success());
    assert!(!geo.logs().join("\n").contains("s3rvice-to-s3rvice"), "the token was logged");
}

#[tokio::test]
async fn control_reaches_geo_over_mtls_with_the_token_and_serves_tls_itself() {
    let pki = Pki::new();
    let geo = tls_geo(&pki, &["--tls-client-ca", &pki.arg("ca.pem"), "--auth-token", "geo-token"]);
    let f2b = Fail2banServer::start();
    let geo_endpoint = format!("https://localhost:{}", geo.grpc_addr.port());
    let control = ControlService::start(&[
        "--fail2ban-socket",
        &f2b.socket_str(),
        "--geo-endpoint",
        &geo_endpoint,
        "--geo-tls-ca",
        &pki.arg("ca.pem"),
        "--geo-tls-cert",
        &pki.arg("client.pem"),
        "--geo-tls-key",
        &pki.arg("client.key"),
        "--geo-auth-token",
        "geo-token",
    ]);
    let mut jails = control.jails().await;
    jails.ban_ip(cpb::BanIpRequest { jail: "alpha".into(), ip: "8.8.8.8".into(), ..Default::default() }).await.unwrap();
    let bans = jails.list_active_bans(cpb::ListActiveBansRequest { ..Default::default() }).await.unwrap().into_inner();
    assert!(bans.geo_available, "{bans:?}");
    assert_eq!(bans.bans[0].country_code, "US");

    // The control-service's own TLS, with grpcurl and a session token.
    let (cert, key) = (pki.arg("server.pem"), pki.arg("server.key"));
    let tls_control =
        ControlService::start(&["--fail2ban-socket", &f2b.socket_str(), "--tls-cert", &cert, "--tls-key", &key]);
    let addr = tls_control.grpc_addr.to_string();
    let password = r#"{"password": "a long enough password"}"#;
    let setup_request =
        serde_json::json!({"password": "a long enough password", "setup_token": tls_control.setup_token()}).to_string();
    let setup = grpcurl_tls(&pki, None, &["-d", &setup_request, &addr, "bangui.control.v1.AuthService/Setup"]);
    assert_eq!(setup, serde_json::json!({}));
    let login = grpcurl_tls(&pki, None, &["-d", password, &addr, "bangui.control.v1.AuthService/Login"]);
    let bearer = format!("authorization: Bearer {}", login["token"].as_str().unwrap());
    let status = grpcurl_tls(&pki, None, &["-H", &bearer, &addr, "bangui.control.v1.JailService/GetServerStatus"]);
    assert_eq!(status["online"], true);
    let plain = grpcurl(&["-plaintext", "-connect-timeout", "2", &addr, "list"]);
    assert!(!plain.status.success(), "plaintext against TLS");
}
