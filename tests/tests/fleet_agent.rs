//! The real `fail2ban-agent` against the real control-service (issue 21):
//! it enrolls with a one-time token, attaches, and the host is listed with
//! what its fail2ban-server says; a restarted agent is the same host; a
//! fail2ban that hangs does not cut the stream; a revoked agent is cut and
//! exits; and when the replica holding its stream
//! gets SIGTERM, the agent is on the other replica within 2 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

use bangui_e2e::{ControlService, PgSchema, agent::AgentProcess, fail2ban::Fail2banServer};
use bangui_proto::control::v1::{self as pb, host_service_client::HostServiceClient};

/// The agent port of `control`.
fn agent_endpoint(control: &ControlService) -> String {
    format!("http://{}", control.agent_addr().expect("the serving line names the agent port"))
}

/// A one-time enrollment token, written to a file the agent reads.
async fn token_file(control: &ControlService, dir: &Path) -> std::path::PathBuf {
    let mut hosts = HostServiceClient::new(control.authed().await);
    let token = hosts
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest { ttl_seconds: 600, note: "test".into() })
        .await
        .unwrap()
        .into_inner()
        .token;
    let path = dir.join("enroll-token");
    std::fs::write(&path, token).unwrap();
    path
}

async fn hosts(control: &ControlService) -> Vec<pb::Host> {
    let mut client = HostServiceClient::new(control.authed().await);
    client.list_hosts(pb::ListHostsRequest {}).await.unwrap().into_inner().hosts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_enrolls_attaches_and_stays_the_same_host_across_restarts() {
    let f2b = Fail2banServer::start();
    let control = ControlService::start(&[]);
    let endpoint = agent_endpoint(&control);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let token = token_file(&control, dir.path()).await;
    let token_arg = token.to_str().unwrap();
    let agent = AgentProcess::start(
        &endpoint,
        &state,
        &f2b.socket(),
        &["--enroll-token-file", token_arg, "--host-name", "web-1"],
    );
    agent.wait_attached(1).await;

    let listed = hosts(&control).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let host = &listed[0];
    assert_eq!(host.name, "web-1");
    assert!(host.connected, "{host:?}");
    assert!(!host.fail2ban_version.is_empty(), "{host:?}");
    let mut expected: Vec<String> = f2b
        .client_ok(&["status"])
        .lines()
        .find_map(|l| {
            l.split_once("Jail list:").map(|(_, jails)| jails.split(',').map(|j| j.trim().to_owned()).collect())
        })
        .unwrap();
    expected.sort();
    assert_eq!(host.jails, expected);
    let mode = std::fs::metadata(state.join("identity.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let id = host.id.clone();

    // Restarted, without a token (it is spent): the same host.
    assert!(agent.terminate().success());
    let again = AgentProcess::start(&endpoint, &state, &f2b.socket(), &[]);
    again.wait_attached(1).await;
    let listed = hosts(&control).await;
    assert_eq!(listed.len(), 1, "a restart made a new host: {listed:?}");
    assert_eq!(listed[0].id, id);
    bangui_e2e::eventually(5, "the restarted agent listed connected", || async {
        hosts(&control).await.first().is_some_and(|h| h.connected)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_fail2ban_does_not_cut_the_hosts_stream() {
    let f2b = Fail2banServer::start();
    let control = ControlService::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(&control, dir.path()).await;
    let agent = AgentProcess::start(
        &agent_endpoint(&control),
        &dir.path().join("state"),
        &f2b.socket(),
        &["--enroll-token-file", token.to_str().unwrap()],
    );
    agent.wait_attached(1).await;
    // fail2ban stops answering (its socket still accepts) for longer than
    // the control plane lets an agent stay silent (5 s).
    f2b.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let host = hosts(&control).await.remove(0);
    f2b.signal("-CONT");
    assert!(host.connected, "{host:?}");
    assert_eq!(agent.count("attached to the control plane"), 1, "the stream was cut: {:?}", agent.logs());
    assert_eq!(agent.count("stream to the control plane ended"), 0, "{:?}", agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_cut_and_exits_refused() {
    let f2b = Fail2banServer::start();
    let control = ControlService::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(&control, dir.path()).await;
    let mut agent = AgentProcess::start(
        &agent_endpoint(&control),
        &dir.path().join("state"),
        &f2b.socket(),
        &["--enroll-token-file", token.to_str().unwrap()],
    );
    agent.wait_attached(1).await;
    let id = hosts(&control).await[0].id.clone();
    let mut client = HostServiceClient::new(control.authed().await);
    client.revoke_host(pb::RevokeHostRequest { id }).await.unwrap();
    let revoked = Instant::now();
    let status = agent.wait_exit(Duration::from_secs(5)).await;
    let took = revoked.elapsed();
    println!("revoked agent exited {took:?} after RevokeHost returned");
    assert_eq!(status.code(), Some(1), "{:?}", agent.logs());
    assert!(took <= Duration::from_secs(2), "{took:?}");
    assert!(agent.logs().iter().any(|l| l.contains("refused this host's credential")), "{:?}", agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_on_the_other_replica_within_two_seconds_of_a_drain() {
    let f2b = Fail2banServer::start();
    let schema = PgSchema::create("fleet_agent").await;
    let url = schema.url();
    let start = || ControlService::start(&["--database-url", &url, "--shutdown-grace", "5s"]);
    let (first, second) = (start(), start());
    let endpoints = format!("{},{}", agent_endpoint(&first), agent_endpoint(&second));
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(&first, dir.path()).await;
    let agent = AgentProcess::start(
        &endpoints,
        &dir.path().join("state"),
        &f2b.socket(),
        &["--enroll-token-file", token.to_str().unwrap()],
    );
    agent.wait_attached(1).await;
    // Endpoints are tried in order: the first replica holds the stream.
    let holder = hosts(&second).await[0].replica.clone();
    assert!(!holder.is_empty());
    let drained = Instant::now();
    let exit = tokio::spawn(first.shutdown());
    agent.wait_attached(2).await;
    let took = drained.elapsed();
    let exit = exit.await.unwrap();
    println!("agent attached to the other replica {took:?} after SIGTERM (replica exit: {exit:?})");
    assert!(took <= Duration::from_secs(2), "{took:?}; agent log: {:?}", agent.logs());
    bangui_e2e::eventually(5, "the host listed on the other replica", || async {
        hosts(&second).await.first().is_some_and(|h| h.connected && h.replica != holder)
    })
    .await;
}

/// Under the control-service's mTLS (`--tls-cert`, `--tls-client-ca`) the
/// agent attaches with `--tls-ca` and its client certificate; without the
/// certificate it never gets a call through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_attaches_over_mtls() {
    use bangui_e2e::{Bearer, tls::Pki};
    use bangui_proto::control::v1::{LoginRequest, SetupRequest, auth_service_client::AuthServiceClient};
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let f2b = Fail2banServer::start();
    let pki = Pki::new();
    let control = ControlService::start(&[
        "--tls-cert",
        &pki.arg("server.pem"),
        "--tls-key",
        &pki.arg("server.key"),
        "--tls-client-ca",
        &pki.arg("ca.pem"),
    ]);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("localhost")
        .identity(Identity::from_pem(pki.read("client.pem"), pki.read("client.key")));
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", control.grpc_addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut auth = AuthServiceClient::new(channel.clone());
    let password = "a long enough password".to_owned();
    auth.setup(SetupRequest { password: password.clone(), setup_token: control.setup_token() }).await.unwrap();
    let session = auth.login(LoginRequest { password }).await.unwrap().into_inner().token;
    let bearer = Bearer(format!("Bearer {session}").parse().unwrap());
    let mut hosts = HostServiceClient::with_interceptor(channel, bearer);
    let token = hosts
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest { ttl_seconds: 600, note: String::new() })
        .await
        .unwrap()
        .into_inner()
        .token;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("enroll-token"), token).unwrap();
    let token_file = dir.path().join("enroll-token").display().to_string();
    let endpoint = format!("https://localhost:{}", control.agent_addr().unwrap().port());
    let (ca, cert, key) = (pki.arg("ca.pem"), pki.arg("client.pem"), pki.arg("client.key"));

    // No client certificate: the handshake fails, nothing is enrolled.
    let mut bare = AgentProcess::start(
        &endpoint,
        &dir.path().join("bare"),
        &f2b.socket(),
        &["--enroll-token-file", &token_file, "--tls-ca", &ca],
    );
    assert_eq!(bare.wait_exit(Duration::from_secs(20)).await.code(), Some(1), "{:?}", bare.logs());
    assert!(hosts.list_hosts(pb::ListHostsRequest {}).await.unwrap().into_inner().hosts.is_empty());

    let agent = AgentProcess::start(
        &endpoint,
        &dir.path().join("state"),
        &f2b.socket(),
        &["--enroll-token-file", &token_file, "--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key],
    );
    agent.wait_attached(1).await;
    let listed = hosts.list_hosts(pb::ListHostsRequest {}).await.unwrap().into_inner().hosts;
    assert!(listed.len() == 1 && listed[0].connected, "{listed:?}");
}
