//! The plaintext health-only port (`--health-listen`) beside a TLS main
//! port, on both services, as the kubelet's gRPC probe uses it: SERVING for
//! "" and for the service name in plaintext while the main port refuses
//! plaintext, nothing but `grpc.health.v1` on it (no reflection, no API),
//! NOT_SERVING there during the SIGTERM drain, closed once the process
//! has stopped; and the real grpcurl against it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, time::Duration};

use bangui_e2e::{ControlService, GeoService, ServiceProcess, eventually, grpcurl, tls::Pki};
use bangui_proto::{
    control::v1 as cpb,
    geo::v1::{LookupStreamRequest, geo_service_client::GeoServiceClient},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// One plaintext health check on a fresh connection, as a kubelet probe
/// makes it.
async fn check(addr: SocketAddr, service: &str) -> Result<ServingStatus, String> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let request = HealthCheckRequest { service: service.into() };
    let response = HealthClient::new(channel).check(request).await.map_err(|s| format!("{s:?}"))?;
    Ok(response.into_inner().status())
}

/// What every service's health port must do while it serves: SERVING in
/// plaintext for "" and `service`, the TLS main port refusing plaintext,
/// no reflection, and grpcurl with the health schema answering SERVING.
/// `args`, then TLS on the main port, a plaintext health port and a long
/// drain (the tests hold it open).
fn with_tls_and_a_health_port(pki: &Pki, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["--tls-cert".to_owned(), pki.arg("server.pem"), "--tls-key".to_owned(), pki.arg("server.key")]);
    all.extend(["--health-listen", "127.0.0.1:0", "--shutdown-grace", "30s"].map(str::to_owned));
    all
}

async fn serves_health_in_plaintext(process: &ServiceProcess, service: &str) -> SocketAddr {
    let health = process.health_addr().expect("no health_addr in the serving line");
    assert_ne!(health, process.grpc_addr);
    assert_eq!(check(health, "").await, Ok(ServingStatus::Serving));
    assert_eq!(check(health, service).await, Ok(ServingStatus::Serving));
    // The same check on the TLS main port fails: that is why the port exists.
    let main = check(process.grpc_addr, "").await;
    assert!(main.is_err(), "the TLS main port answered plaintext: {main:?}");

    // Nothing to discover: no reflection on the health port.
    let addr = health.to_string();
    let listed = grpcurl(&["-plaintext", "-connect-timeout", "2", &addr, "list"]);
    let text = String::from_utf8_lossy(&listed.stderr);
    assert!(!listed.status.success() && text.contains("does not support the reflection API"), "{text}");
    // A client that knows the health schema (as a probe does) gets SERVING.
    let dir = tempfile::tempdir().unwrap();
    let protoset = dir.path().join("health.protoset");
    std::fs::write(&protoset, tonic_health::pb::FILE_DESCRIPTOR_SET).unwrap();
    let protoset = protoset.display().to_string();
    let body = format!(r#"{{"service": "{service}"}}"#);
    for body in ["{}", body.as_str()] {
        let out = grpcurl(&["-plaintext", "-protoset", &protoset, "-d", body, &addr, "grpc.health.v1.Health/Check"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["status"], "SERVING", "{body}: {stdout}");
    }
    health
}

/// After SIGTERM, while an RPC holds the drain open: the health port says
/// NOT_SERVING (for "" and `service`) and never SERVING again.
async fn not_serving_during_the_drain(health: SocketAddr, service: &str) {
    eventually(5, "NOT_SERVING on the health port", || async {
        check(health, "").await == Ok(ServingStatus::NotServing)
    })
    .await;
    for _ in 0..5 {
        assert_eq!(check(health, "").await, Ok(ServingStatus::NotServing));
        assert_eq!(check(health, service).await, Ok(ServingStatus::NotServing));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tls_channel(port: u16, pki: &Pki) -> Channel {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read("ca.pem"))).domain_name("localhost");
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn geo_health_port_serves_plaintext_beside_tls_and_drains() {
    let pki = Pki::new();
    let args = with_tls_and_a_health_port(&pki, &["--mmdb", "builtin:sample"]);
    let geo = GeoService::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let service = "bangui.geo.v1.GeoService";
    let health = serves_health_in_plaintext(&geo, service).await;
    // Health only: the geo API is not routed there.
    let mut plain = GeoServiceClient::connect(format!("http://{health}")).await.unwrap();
    let status = plain.lookup(bangui_proto::geo::v1::LookupRequest { ip: "8.8.8.8".into(), allow_remote: false });
    assert_eq!(status.await.unwrap_err().code(), tonic::Code::Unimplemented);

    // A LookupStream over TLS, answered once and left open: the drain waits
    // for it.
    let (requests, stream) = tokio::sync::mpsc::channel(1);
    let mut client = GeoServiceClient::new(tls_channel(geo.grpc_addr.port(), &pki).await);
    requests.send(LookupStreamRequest { ip: "8.8.8.8".into(), allow_remote: false }).await.unwrap();
    let mut replies =
        client.lookup_stream(tokio_stream::wrappers::ReceiverStream::new(stream)).await.unwrap().into_inner();
    assert_eq!(replies.message().await.unwrap().unwrap().result.unwrap().country_code, "US");

    let exited = tokio::spawn(geo.shutdown());
    not_serving_during_the_drain(health, service).await;
    assert!(!exited.is_finished(), "the process stopped while a stream was open");

    // The stream ends: the drain is over, the process exits, the port closes.
    drop(requests);
    assert!(replies.message().await.unwrap().is_none());
    assert!(exited.await.unwrap().success());
    let closed = check(health, "").await;
    assert!(closed.is_err(), "the health port outlived the process: {closed:?}");
}

/// A fail2ban socket that accepts and never answers: a control call that
/// reaches fail2ban stays in flight until `--fail2ban-timeout`.
fn silent_fail2ban(dir: &tempfile::TempDir) -> (std::os::unix::net::UnixListener, String) {
    let path = dir.path().join("silent.sock");
    (std::os::unix::net::UnixListener::bind(&path).unwrap(), path.display().to_string())
}

#[tokio::test]
async fn control_health_port_serves_plaintext_beside_tls_and_drains() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_listener, socket) = silent_fail2ban(&dir);
    let args = with_tls_and_a_health_port(&pki, &["--fail2ban-socket", &socket, "--fail2ban-timeout", "4s"]);
    let control = ControlService::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let service = "bangui.control.v1.JailService";
    let health = serves_health_in_plaintext(&control, service).await;
    let mut plain = cpb::auth_service_client::AuthServiceClient::connect(format!("http://{health}")).await.unwrap();
    let status = plain.get_setup_status(cpb::GetSetupStatusRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

    // A JailService call (with a session, over TLS) that waits on the
    // silent fail2ban holds the drain open.
    let channel = tls_channel(control.grpc_addr.port(), &pki).await;
    let mut auth = cpb::auth_service_client::AuthServiceClient::new(channel.clone());
    let setup_token = control.setup_token();
    let password = bangui_e2e::CONTROL_PASSWORD.to_owned();
    auth.setup(cpb::SetupRequest { password: password.clone(), setup_token }).await.unwrap();
    let token = auth.login(cpb::LoginRequest { password }).await.unwrap().into_inner().token;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut jails = cpb::jail_service_client::JailServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("authorization", bearer.clone());
            Ok(request)
        },
    );
    let held =
        tokio::spawn(
            async move { jails.get_server_status(cpb::GetServerStatusRequest { ..Default::default() }).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the call did not wait on fail2ban: {:?}", held.await);

    let exited = tokio::spawn(control.shutdown());
    not_serving_during_the_drain(health, service).await;
    assert!(!exited.is_finished(), "the process stopped while a call was in flight");

    // The call ends with fail2ban's timeout; the drain ends, the port closes.
    let answer = held.await.unwrap();
    assert!(answer.is_ok() || answer.as_ref().unwrap_err().code() == tonic::Code::Unavailable, "{answer:?}");
    assert!(exited.await.unwrap().success());
    let closed = check(health, "").await;
    assert!(closed.is_err(), "the health port outlived the process: {closed:?}");
}

#[test]
fn a_health_port_equal_to_the_main_port_is_refused_at_start() {
    for (name, extra) in [("geo-service", &["--mmdb", "builtin:sample"][..]), ("control-service", &[][..])] {
        let out = std::process::Command::new(bangui_e2e::binary(name))
            .args(["--listen", "127.0.0.1:50999", "--health-listen", "127.0.0.1:50999"])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("--health-listen 127.0.0.1:50999") && stderr.contains("--listen 127.0.0.1:50999"),
            "{name}: {stderr}"
        );
    }
}
