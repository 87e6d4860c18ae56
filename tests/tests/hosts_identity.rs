//! The fleet's identity end to end (issue 21, item 3): the real
//! control-service binary, HostService through an authed channel and the
//! real grpcurl, and the test process playing a fail2ban-agent on the
//! agent port with the generated AgentService client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bangui_e2e::{ControlService, grpcurl, grpcurl_json};
use bangui_proto::{
    agent::v1::{
        AttachRequest, AttachResponse, EnrollRequest, Heartbeat, Hello, Welcome,
        agent_service_client::AgentServiceClient, attach_request::Body as Inbound, attach_response::Body as Outbound,
    },
    control::v1::{
        CreateEnrollmentTokenRequest, GetHostRequest, Host, ListHostsRequest, RenameHostRequest, RevokeHostRequest,
        host_service_client::HostServiceClient,
    },
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

const SERVICE: &str = "bangui.control.v1.HostService";
const HOST_A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const HOST_B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const HOST_C: &str = "16fd2706-8baf-433b-82eb-8c7fada847da";
const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An attached agent: heartbeats every second with what `state` holds,
/// until it is dropped.
struct Agent {
    welcome: Welcome,
    responses: Streaming<AttachResponse>,
    state: watch::Sender<Heartbeat>,
    _outbound: mpsc::Sender<AttachRequest>,
    beats: tokio::task::JoinHandle<()>,
}

impl Drop for Agent {
    /// Ends the agent's side of the stream (its heartbeats held it open).
    fn drop(&mut self) {
        self.beats.abort();
    }
}

fn hello(host_id: &str, instance: &str, jails: &[&str]) -> Hello {
    Hello {
        host_id: host_id.into(),
        agent_version: AGENT_VERSION.into(),
        instance: instance.into(),
        fail2ban_version: "1.1.0".into(),
        jails: jails.iter().map(|j| (*j).to_owned()).collect(),
        ..Default::default()
    }
}

async fn agent_client(addr: SocketAddr) -> AgentServiceClient<tonic::transport::Channel> {
    AgentServiceClient::connect(format!("http://{addr}")).await.unwrap()
}

/// Opens Attach with `credential`, sending `first` as the first message.
async fn attach_with(addr: SocketAddr, credential: &str, first: Inbound) -> Result<Agent, Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(AttachRequest { body: Some(first.clone()) }).await.unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert("authorization", format!("Bearer {credential}").parse().unwrap());
    let mut responses = agent_client(addr).await.attach(request).await?.into_inner();
    let Some(AttachResponse { body: Some(Outbound::Welcome(welcome)) }) = responses.message().await? else {
        panic!("the first answer is a Welcome")
    };
    let initial = match first {
        Inbound::Hello(h) => Heartbeat { fail2ban_version: h.fail2ban_version, jails: h.jails, ..Default::default() },
        Inbound::Heartbeat(h) => h,
        Inbound::Result(_) | Inbound::Events(_) => Heartbeat::default(),
    };
    let (state, mut latest) = watch::channel(initial);
    let beats = tx.clone();
    let beats = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let beat = latest.borrow_and_update().clone();
            if beats.send(AttachRequest { body: Some(Inbound::Heartbeat(beat)) }).await.is_err() {
                return;
            }
        }
    });
    Ok(Agent { welcome, responses, state, _outbound: tx, beats })
}

async fn attach(addr: SocketAddr, credential: &str, hello: Hello) -> Result<Agent, Status> {
    attach_with(addr, credential, Inbound::Hello(hello)).await
}

fn code<T>(result: Result<T, Status>) -> (Code, String) {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

async fn host(hosts: &mut HostServiceClient<bangui_e2e::Authed>, id: &str) -> Host {
    hosts.get_host(GetHostRequest { id: id.into() }).await.unwrap().into_inner().host.unwrap()
}

#[tokio::test]
async fn enroll_attach_revoke() {
    let control = ControlService::start(&[]);
    let agent_addr = control.agent_addr().expect("the serving line names the agent port");
    let mut hosts = HostServiceClient::new(control.authed().await);
    let tokens = hosts.clone();
    let token = |ttl_seconds: u32| {
        let mut hosts = tokens.clone();
        async move {
            let request = CreateEnrollmentTokenRequest { ttl_seconds, note: "e2e".into() };
            hosts.create_enrollment_token(request).await.unwrap().into_inner().token
        }
    };
    let mut agents = agent_client(agent_addr).await;

    // Enroll: one token, one host; the same token again is refused.
    let first_token = token(60).await;
    let enroll = |token: &str, host_id: &str, host_name: &str| EnrollRequest {
        token: token.into(),
        host_id: host_id.into(),
        host_name: host_name.into(),
    };
    let a = agents.enroll(enroll(&first_token, HOST_A, "web-1")).await.unwrap().into_inner();
    assert_eq!((a.host_id.as_str(), a.host_name.as_str()), (HOST_A, "web-1"));
    assert_eq!(a.credential.len(), 43, "32 bytes, base64url");
    let (code_, message) = code(agents.enroll(enroll(&first_token, HOST_B, "web-2")).await);
    assert_eq!(code_, Code::Unauthenticated, "{message}");
    assert!(message.contains("used or expired"), "{message}");
    assert_eq!(code(hosts.get_host(GetHostRequest { id: HOST_B.into() }).await).0, Code::NotFound, "nothing written");

    // Bad input names the field and writes nothing.
    let second_token = token(60).await;
    let (code_, message) = code(agents.enroll(enroll(&second_token, HOST_B, "web 2")).await);
    assert_eq!(code_, Code::InvalidArgument);
    assert!(message.contains("host_name"), "{message}");
    let (code_, message) = code(agents.enroll(enroll(&second_token, "not-a-uuid", "web-2")).await);
    assert_eq!(code_, Code::InvalidArgument);
    assert!(message.contains("host_id"), "{message}");
    // The token is still good after refusals of bad input; a taken name gets a suffix.
    let b = agents.enroll(enroll(&second_token, HOST_B, "web-1")).await.unwrap().into_inner();
    assert_eq!(b.host_name, "web-1-2");

    // HostService input is checked the same way.
    let too_long = CreateEnrollmentTokenRequest { ttl_seconds: 8 * 24 * 3600, note: String::new() };
    let (code_, message) = code(hosts.create_enrollment_token(too_long).await);
    assert_eq!(code_, Code::InvalidArgument);
    assert!(message.contains("ttl_seconds"), "{message}");
    let chatty = CreateEnrollmentTokenRequest { ttl_seconds: 60, note: "n".repeat(201) };
    let (code_, message) = code(hosts.create_enrollment_token(chatty).await);
    assert_eq!(code_, Code::InvalidArgument);
    assert!(message.contains("note"), "{message}");
    let (code_, message) = code(hosts.get_host(GetHostRequest { id: "../etc".into() }).await);
    assert_eq!(code_, Code::InvalidArgument);
    assert!(message.contains("id"), "{message}");

    // An expired token is refused.
    let short = token(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(code(agents.enroll(enroll(&short, HOST_C, "late")).await).0, Code::Unauthenticated);

    // Attach: the host is listed connected, with its jails and versions.
    let mut agent = attach(agent_addr, &a.credential, hello(HOST_A, "i1", &["sshd", "nginx-http"])).await.unwrap();
    assert_eq!(agent.welcome.host_name, "web-1");
    assert_eq!(agent.welcome.heartbeat_seconds, 1);
    assert_eq!(agent.welcome.control_version, AGENT_VERSION);
    assert!(!agent.welcome.replica.is_empty());
    let listed = hosts.list_hosts(ListHostsRequest {}).await.unwrap().into_inner().hosts;
    let shown = listed.iter().find(|h| h.id == HOST_A).unwrap();
    assert!(shown.connected && shown.replica == agent.welcome.replica, "{shown:?}");
    assert_eq!(shown.jails, ["sshd", "nginx-http"]);
    assert_eq!((shown.agent_version.as_str(), shown.fail2ban_version.as_str()), (AGENT_VERSION, "1.1.0"));
    assert!(shown.last_seen.is_some() && !shown.revoked);
    assert!(!listed.iter().find(|h| h.id == HOST_B).unwrap().connected);

    // Heartbeats carry the host's state.
    agent.state.send_replace(Heartbeat {
        fail2ban_version: "1.1.1".into(),
        jails: vec!["sshd".into()],
        ..Default::default()
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = host(&mut hosts, HOST_A).await;
        if now.jails == ["sshd"] && now.fail2ban_version == "1.1.1" {
            break;
        }
        assert!(Instant::now() < deadline, "the heartbeat never showed: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A second stream with the same credential while the first is open.
    let (code_, message) = code(attach(agent_addr, &a.credential, hello(HOST_A, "i2", &[])).await);
    assert_eq!(code_, Code::AlreadyExists, "{message}");
    // A valid credential claiming another host's id, both ways.
    assert_eq!(code(attach(agent_addr, &b.credential, hello(HOST_A, "i3", &[])).await).0, Code::Unauthenticated);
    assert_eq!(code(attach(agent_addr, &a.credential, hello(HOST_B, "i4", &[])).await).0, Code::Unauthenticated);
    assert_eq!(code(attach(agent_addr, "", hello(HOST_B, "i4", &[])).await).0, Code::Unauthenticated);
    // The first message must be a Hello; versions are checked.
    let beat = Inbound::Heartbeat(Heartbeat::default());
    assert_eq!(code(attach_with(agent_addr, &b.credential, beat).await).0, Code::InvalidArgument);
    let mut old = hello(HOST_B, "i5", &[]);
    old.agent_version = "99.0.0".into();
    let (code_, message) = code(attach(agent_addr, &b.credential, old).await);
    assert_eq!(code_, Code::FailedPrecondition);
    assert!(message.contains("99.0.0") && message.contains(AGENT_VERSION), "{message}");
    let (code_, message) = code(attach(agent_addr, &b.credential, hello(HOST_B, "i6", &["bad jail"])).await);
    assert_eq!(code_, Code::InvalidArgument);
    assert!(message.contains("hello.jails"), "{message}");
    // The first stream still stands.
    assert!(host(&mut hosts, HOST_A).await.connected);

    // Rename: bounded, unique.
    let renamed = hosts.rename_host(RenameHostRequest { id: HOST_B.into(), name: "db-1".into() }).await.unwrap();
    assert_eq!(renamed.into_inner().host.unwrap().name, "db-1");
    let taken = hosts.rename_host(RenameHostRequest { id: HOST_B.into(), name: "web-1".into() }).await;
    assert_eq!(code(taken).0, Code::AlreadyExists);
    let bad = hosts.rename_host(RenameHostRequest { id: HOST_B.into(), name: "x".repeat(64) }).await;
    let (code_, message) = code(bad);
    assert_eq!(code_, Code::InvalidArgument);
    assert!(message.contains("name"), "{message}");

    // Revoke cuts the open stream within a second, and the credential is refused after.
    let revoked = hosts.revoke_host(RevokeHostRequest { id: HOST_A.into() }).await.unwrap().into_inner();
    let returned = Instant::now();
    let revoked = revoked.host.unwrap();
    assert!(revoked.revoked && !revoked.connected, "{revoked:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), agent.responses.message()).await.expect("the stream ends");
    let cut_after = returned.elapsed();
    assert!(cut_after <= Duration::from_secs(1), "the stream ended {cut_after:?} after RevokeHost");
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
    let (code_, _) = code(attach(agent_addr, &a.credential, hello(HOST_A, "i1", &[])).await);
    assert_eq!(code_, Code::Unauthenticated);
    let after = host(&mut hosts, HOST_A).await;
    assert!(after.revoked && after.revoked_at.is_some() && !after.connected);
    assert_eq!(code(hosts.revoke_host(RevokeHostRequest { id: HOST_C.into() }).await).0, Code::NotFound);

    // The README's grpcurl forms, with a session.
    let addr = control.grpc_addr.to_string();
    let bearer = format!("authorization: Bearer {}", control.token().await);
    let created = grpcurl_json(&[
        "-plaintext",
        "-H",
        &bearer,
        "-d",
        r#"{"ttl_seconds": 3600, "note": "web-3"}"#,
        &addr,
        &format!("{SERVICE}/CreateEnrollmentToken"),
    ]);
    assert_eq!(created["token"].as_str().map(str::len), Some(43), "{created}");
    let listed = grpcurl_json(&["-plaintext", "-H", &bearer, &addr, &format!("{SERVICE}/ListHosts")]);
    assert_eq!(listed["hosts"].as_array().map(Vec::len), Some(2), "{listed}");
    let revoked = grpcurl_json(&[
        "-plaintext",
        "-H",
        &bearer,
        "-d",
        &format!(r#"{{"id": "{HOST_B}"}}"#),
        &addr,
        &format!("{SERVICE}/RevokeHost"),
    ]);
    assert_eq!(revoked["host"]["revoked"], true, "{revoked}");
}

#[tokio::test]
async fn every_host_rpc_needs_a_session() {
    let control = ControlService::start(&[]);
    let addr = control.grpc_addr.to_string();
    let listed = grpcurl(&["-plaintext", &addr, "list", SERVICE]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let methods: BTreeSet<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{SERVICE}.")).map(str::to_owned))
        .collect();
    let expected = ["CreateEnrollmentToken", "GetHost", "ListHosts", "RenameHost", "RevokeHost"];
    assert_eq!(methods, expected.iter().map(|m| (*m).to_owned()).collect::<BTreeSet<_>>());
    for method in &methods {
        let body = format!(r#"{{"id": "{HOST_A}"}}"#);
        let body = if method.ends_with("Host") { body.as_str() } else { "{}" };
        for headers in [&[][..], &["-H", "authorization: Bearer not-a-session"][..]] {
            let mut args = vec!["-plaintext"];
            args.extend_from_slice(headers);
            args.extend(["-d", body, &addr]);
            let target = format!("{SERVICE}/{method}");
            args.push(&target);
            let out = grpcurl(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("Code: Unauthenticated"),
                "{method} {headers:?}: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn agent_streams_have_their_own_cap() {
    let control = ControlService::start(&["--agent-max-streams", "1"]);
    let agent_addr = control.agent_addr().unwrap();
    let mut hosts = HostServiceClient::new(control.authed().await);
    let mut agents = agent_client(agent_addr).await;
    let mut credentials = Vec::new();
    for (id, name) in [(HOST_A, "one"), (HOST_B, "two")] {
        let token = hosts
            .create_enrollment_token(CreateEnrollmentTokenRequest { ttl_seconds: 60, note: String::new() })
            .await
            .unwrap()
            .into_inner()
            .token;
        let request = EnrollRequest { token, host_id: id.into(), host_name: name.into() };
        credentials.push(agents.enroll(request).await.unwrap().into_inner().credential);
    }
    let first = attach(agent_addr, &credentials[0], hello(HOST_A, "i1", &[])).await.unwrap();
    let (code_, message) = code(attach(agent_addr, &credentials[1], hello(HOST_B, "i2", &[])).await);
    assert_eq!(code_, Code::ResourceExhausted, "{message}");
    assert!(message.contains("--agent-max-streams"), "{message}");
    // Unary RPCs on the control port are not counted against it.
    assert_eq!(hosts.list_hosts(ListHostsRequest {}).await.unwrap().into_inner().hosts.len(), 2);
    // A stream that ends gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut second = loop {
        match attach(agent_addr, &credentials[1], hello(HOST_B, "i2", &[])).await {
            Ok(agent) => break agent,
            Err(status) if status.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    // SIGTERM: open streams end at once (UNAVAILABLE: attach elsewhere),
    // so they do not hold the drain for its whole grace period.
    let started = Instant::now();
    let (status, ended) = tokio::join!(control.shutdown(), second.responses.message());
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    let (code_, message) = code(ended);
    assert_eq!(code_, Code::Unavailable, "{message}");
}

/// Two replicas on one PostgreSQL: the lease in the host's row makes one
/// live stream per host across them; the same agent process moving to the
/// other replica takes over; a revocation on the replica without the
/// stream cuts it at that stream's next refresh (every second).
#[tokio::test]
async fn one_stream_per_host_across_replicas() {
    let schema = bangui_e2e::PgSchema::create("hosts_identity").await;
    let url = schema.url();
    let one = ControlService::start(&["--database-url", &url]);
    let two = ControlService::start(&["--database-url", &url]);
    let (addr_one, addr_two) = (one.agent_addr().unwrap(), two.agent_addr().unwrap());
    let mut hosts_one = HostServiceClient::new(one.authed().await);
    let mut hosts_two = HostServiceClient::new(two.authed().await);
    let request = CreateEnrollmentTokenRequest { ttl_seconds: 60, note: String::new() };
    let token = hosts_one.create_enrollment_token(request).await.unwrap().into_inner().token;
    let request = EnrollRequest { token, host_id: HOST_A.into(), host_name: "edge".into() };
    let credential = agent_client(addr_two).await.enroll(request).await.unwrap().into_inner().credential;

    let mut first = attach(addr_one, &credential, hello(HOST_A, "i1", &["sshd"])).await.unwrap();
    let shown = host(&mut hosts_two, HOST_A).await;
    assert!(shown.connected && shown.replica == first.welcome.replica, "{shown:?}");
    // Another process with the credential, on the other replica: refused.
    let (code_, message) = code(attach(addr_two, &credential, hello(HOST_A, "i2", &[])).await);
    assert_eq!(code_, Code::AlreadyExists, "{message}");
    // The same process reconnecting there takes over; the old stream ends.
    let mut second = attach(addr_two, &credential, hello(HOST_A, "i1", &["sshd"])).await.unwrap();
    assert_ne!(second.welcome.replica, first.welcome.replica);
    let ended = tokio::time::timeout(Duration::from_secs(3), first.responses.message()).await.expect("taken over");
    assert_eq!(ended.unwrap_err().code(), Code::Aborted);
    assert_eq!(host(&mut hosts_one, HOST_A).await.replica, second.welcome.replica);

    // Revoked through the replica that does not hold the stream, at a
    // random point of its refresh period (the steps above line the two
    // replicas' ticks up, which would hide the wait).
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
    let asked = Instant::now();
    hosts_one.revoke_host(RevokeHostRequest { id: HOST_A.into() }).await.unwrap();
    let returned = Instant::now();
    println!("RevokeHost took {:?}", returned - asked);
    let ended = tokio::time::timeout(Duration::from_secs(5), second.responses.message()).await.expect("cut");
    let cut_after = returned.elapsed();
    println!("revocation on the other replica cut the stream after {cut_after:?}");
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
    // One refresh period (1 s) plus a database round trip.
    assert!(cut_after <= Duration::from_millis(1200), "the stream ended {cut_after:?} after RevokeHost");
    assert_eq!(code(attach(addr_two, &credential, hello(HOST_A, "i1", &[])).await).0, Code::Unauthenticated);
}

/// What an agent sends is bounded before anything is written: jail lists,
/// jail names, the message size, the wait for a Hello.
#[tokio::test]
async fn agent_input_is_bounded() {
    let control = ControlService::start(&[]);
    let agent_addr = control.agent_addr().unwrap();
    let mut hosts = HostServiceClient::new(control.authed().await);
    let request = CreateEnrollmentTokenRequest { ttl_seconds: 60, note: String::new() };
    let token = hosts.create_enrollment_token(request).await.unwrap().into_inner().token;
    let request = EnrollRequest { token, host_id: HOST_A.into(), host_name: "bounded".into() };
    let credential = agent_client(agent_addr).await.enroll(request).await.unwrap().into_inner().credential;
    let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("{i:0>100}")).collect() };
    let with_jails = |jails: Vec<String>| Hello { jails, ..hello(HOST_A, "i1", &[]) };

    // 1 001 jails: INVALID_ARGUMENT naming the field, nothing written.
    let (code_, message) = code(attach(agent_addr, &credential, with_jails(names(1001))).await);
    assert_eq!(code_, Code::InvalidArgument);
    assert!(message.contains("hello.jails"), "{message}");
    // A message over the agent port's limit (a command result's 1 MiB and
    // a margin) is refused by its size, unread.
    let (code_, message) = code(attach(agent_addr, &credential, with_jails(names(12_000))).await);
    assert!(matches!(code_, Code::OutOfRange | Code::ResourceExhausted), "{code_:?} {message}");
    let shown = host(&mut hosts, HOST_A).await;
    assert!(shown.jails.is_empty() && shown.last_seen.is_none() && !shown.connected, "{shown:?}");
    // The largest legitimate Hello (1 000 names of 100 characters) fits.
    let agent = attach(agent_addr, &credential, with_jails(names(1000))).await.unwrap();
    assert_eq!(host(&mut hosts, HOST_A).await.jails.len(), 1000);
    assert_eq!(control.metric("control_agent_streams").await, Some(1.0));
    drop(agent);

    // An Attach that never says Hello is ended after 10 s.
    let (_tx, rx) = mpsc::channel::<AttachRequest>(1);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert("authorization", format!("Bearer {credential}").parse().unwrap());
    let started = Instant::now();
    let silent = agent_client(agent_addr).await.attach(request).await;
    let waited = started.elapsed();
    assert_eq!(code(silent).0, Code::DeadlineExceeded);
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(15), "{waited:?}");
    assert_eq!(control.metric("control_agent_streams").await, Some(0.0));
}

/// The agent port takes the gRPC port's TLS settings: with `--tls-cert` and
/// `--tls-client-ca` an agent needs TLS and a client certificate.
#[tokio::test]
async fn the_agent_port_speaks_the_grpc_ports_tls() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let pki = bangui_e2e::tls::Pki::new();
    let (cert, key, ca) = (pki.arg("server.pem"), pki.arg("server.key"), pki.arg("ca.pem"));
    let control = ControlService::start(&["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca]);
    let port = control.agent_addr().unwrap().port();
    let enroll = |channel| async move {
        let request = EnrollRequest { token: "no-such-token".into(), host_id: HOST_A.into(), host_name: "tls".into() };
        AgentServiceClient::new(channel).enroll(request).await
    };
    let tls = |client: bool| {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read("ca.pem"))).domain_name("localhost");
        if client {
            tls = tls.identity(Identity::from_pem(pki.read("client.pem"), pki.read("client.key")));
        }
        Endpoint::from_shared(format!("https://127.0.0.1:{port}")).unwrap().tls_config(tls).unwrap()
    };
    // Through mTLS the service answers (the token is refused on its merits).
    let channel = tls(true).connect().await.unwrap();
    assert_eq!(code(enroll(channel).await).0, Code::Unauthenticated);
    // Without a client certificate, or in plaintext, no call gets through.
    // (A failed handshake shows up at connect or at the first call,
    // depending on the TLS version and timing, as UNKNOWN, UNAVAILABLE,
    // CANCELLED or INTERNAL; never as the service's answer, which is
    // UNAUTHENTICATED for this token.)
    if let Ok(channel) = tls(false).connect().await {
        let (code_, message) = code(enroll(channel).await);
        assert_ne!(code_, Code::Unauthenticated, "{message}");
    }
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await;
    if let Ok(channel) = plain {
        let (code_, message) = code(enroll(channel).await);
        assert_ne!(code_, Code::Unauthenticated, "{message}");
    }
}

/// One connection of the agent port carries at most 4 calls: a fifth waits
/// for a place (an agent needs one stream; a connection opening hundreds
/// is not an agent), while the same call on a new connection is answered
/// at once.
#[tokio::test]
async fn one_agent_connection_carries_four_calls() {
    let control = ControlService::start(&[]);
    let addr = control.agent_addr().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    // Four Attach calls that never send their Hello hold their places
    // (the service waits up to 10 s for it).
    let mut held = Vec::new();
    for _ in 0..4 {
        let (tx, rx) = mpsc::channel::<AttachRequest>(1);
        let mut client = AgentServiceClient::new(channel.clone());
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert("authorization", "Bearer held".parse().unwrap());
        held.push((tx, tokio::spawn(async move { client.attach(request).await.map(|_| ()) })));
    }
    // Time for the four to open their streams (they wait 10 s for a Hello).
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A fifth on the same connection: a Hello with a wrong credential,
    // which the service refuses at once, if it ever reaches it.
    let refused_at_once = |channel: tonic::transport::Channel| async move {
        let (tx, rx) = mpsc::channel(1);
        tx.send(AttachRequest { body: Some(Inbound::Hello(hello(HOST_A, "i", &[]))) }).await.unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
        request.set_timeout(Duration::from_secs(1));
        let answer = AgentServiceClient::new(channel).attach(request).await;
        drop(tx);
        answer.map(|_| ()).unwrap_err().code()
    };
    // The client's own deadline ends it (CANCELLED "Timeout expired"): it
    // never left the client's queue for a place on the connection.
    assert_eq!(refused_at_once(channel.clone()).await, Code::Cancelled, "a fifth call got through");
    let fresh = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    assert_eq!(refused_at_once(fresh).await, Code::Unauthenticated);
    for (tx, task) in held {
        drop(tx);
        task.abort();
    }
}
