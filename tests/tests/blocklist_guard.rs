//! The blocklist download guard end to end (issue 20, item 4): the real
//! control-service, started without `--blocklist-allow-private`, refuses
//! every IPv6 form of an internal address (NAT64, IPv4-compatible, SIIT,
//! site-local, 6to4, Teredo, IPv4-mapped) with INVALID_ARGUMENT on `url`,
//! before any connect: a listener the test owns on the port the URLs name
//! sees no connection, and no source is stored. With the flag, a loopback
//! list server is reachable.
//!
//! An IPv6 literal in these prefixes leads nowhere on a test machine; what
//! counts is that the guard answers before a connection is tried.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bangui_e2e::{Authed, ControlService};
use bangui_proto::control::v1::{self as pb, blocklist_service_client::BlocklistServiceClient};
use bangui_testkit::list_server::ListServer;
use tokio::net::TcpListener;
use tonic::Code;
use tonic_types::StatusExt;

/// Loopback listeners on one port that count the connections they accept.
struct Listeners {
    port: u16,
    accepted: Arc<AtomicUsize>,
    on_ipv6: bool,
}

impl Listeners {
    /// Binds `127.0.0.1:0`, and `[::1]` on the same port when the machine
    /// has IPv6 loopback.
    async fn start() -> Self {
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = TcpListener::bind(("::1", port)).await.ok();
        let on_ipv6 = v6.is_some();
        let accepted = Arc::new(AtomicUsize::new(0));
        for listener in std::iter::once(v4).chain(v6) {
            let accepted = Arc::clone(&accepted);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                }
            });
        }
        Self { port, accepted, on_ipv6 }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// The targets the guard let through before (the first seven, from the
/// issue), the other embedded forms, and the plain loopback addresses.
const REFUSED_HOSTS: &[&str] = &[
    "[64:ff9b::7f00:1]",              // NAT64 well-known prefix, 127.0.0.1
    "[64:ff9b::a9fe:a9fe]",           // NAT64 well-known prefix, 169.254.169.254 (cloud metadata)
    "[::127.0.0.1]",                  // IPv4-compatible
    "[::ffff:0:7f00:1]",              // SIIT
    "[fec0::1]",                      // site-local
    "[2002:7f00:1::]",                // 6to4 of 127.0.0.1
    "[2001:0:7f00:1::]",              // Teredo, server 127.0.0.1
    "[2001:0:808:808:0:0:80ff:fffe]", // Teredo, client 127.0.0.1 (inverted)
    "[64:ff9b:1::808:808]",           // NAT64 local-use prefix
    "[::ffff:127.0.0.1]",             // IPv4-mapped
    "[::ffff:a9fe:a9fe]",             // IPv4-mapped cloud metadata
    "[::1]",
    "127.0.0.1",
];

fn start_control(dir: &tempfile::TempDir, allow_private: bool) -> ControlService {
    let socket = dir.path().join("no-fail2ban.sock").display().to_string();
    let mut args = vec!["--fail2ban-socket".to_owned(), socket, "--blocklist-timeout".into(), "2s".into()];
    if allow_private {
        args.push("--blocklist-allow-private".into());
    }
    ControlService::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

async fn client(control: &ControlService) -> BlocklistServiceClient<Authed> {
    BlocklistServiceClient::new(control.authed().await)
}

/// The status is INVALID_ARGUMENT on the field `url`.
fn assert_bad_url(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("{what}: no BadRequest detail: {status:?}"));
    assert_eq!(bad.field_violations[0].field, "url", "{what}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_in_every_ipv6_form_are_refused_before_any_connect() {
    let listeners = Listeners::start().await;
    let lists = ListServer::start().await;
    lists.set("list.txt", "1.10.16.1\n");
    let dir = tempfile::tempdir().unwrap();
    let control = start_control(&dir, false);
    let mut client = client(&control).await;

    for (i, host) in REFUSED_HOSTS.iter().enumerate() {
        let url = format!("http://{host}:{}/list", listeners.port);
        let started = std::time::Instant::now();
        let preview = client.preview_source(pb::PreviewSourceRequest { url: url.clone(), ..Default::default() }).await;
        let status = preview.expect_err(&format!("PreviewSource {url} was answered"));
        assert_bad_url(&status, &format!("PreviewSource {url}"));
        assert!(status.message().contains("not a public address"), "{url}: {}", status.message());
        // Refused at once: no connect was tried and timed out first.
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{url}: {:?}", started.elapsed());

        let spec =
            pb::SourceSpec { name: format!("internal-{i}"), url: url.clone(), enabled: true, ..Default::default() };
        let created = client.create_source(pb::CreateSourceRequest { spec: Some(spec) }).await;
        let status = created.expect_err(&format!("CreateSource {url} was stored"));
        assert_bad_url(&status, &format!("CreateSource {url}"));
        assert!(status.message().contains("--blocklist-allow-private"), "{url}: {}", status.message());
    }
    // The loopback list server, which the other service below reaches.
    let status = client
        .preview_source(pb::PreviewSourceRequest { url: lists.url("list.txt"), ..Default::default() })
        .await
        .unwrap_err();
    assert_bad_url(&status, "PreviewSource of the list server");

    assert_eq!(listeners.accepted(), 0, "a refused target was connected to (IPv6 listener: {})", listeners.on_ipv6);
    assert_eq!(lists.total_hits(), 0, "nothing was downloaded");
    let sources = client.list_sources(pb::ListSourcesRequest {}).await.unwrap().into_inner().sources;
    assert!(sources.is_empty(), "nothing was stored: {sources:?}");

    // The listeners do count a connection: the assertion above could fail.
    tokio::net::TcpStream::connect(("127.0.0.1", listeners.port)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while listeners.accepted() == 0 {
        assert!(std::time::Instant::now() < deadline, "the listener saw no connection");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allow_private_a_loopback_list_server_is_reachable() {
    let lists = ListServer::start().await;
    lists.set("list.txt", "1.10.16.1\n45.13.0.2\n127.0.0.1\n64:ff9b::7f00:1\n2002:7f00:1::\n2a01:4f8::1\n");
    let dir = tempfile::tempdir().unwrap();
    let control = start_control(&dir, true);
    let mut client = client(&control).await;
    let preview = client
        .preview_source(pb::PreviewSourceRequest { url: lists.url("list.txt"), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lists.hits("list.txt"), 1);
    assert_eq!(preview.http_status, 200);
    // The embedded forms of 127.0.0.1 are reserved entries of the list too:
    // never banned.
    let counts = preview.counts.unwrap();
    assert_eq!((counts.valid, counts.reserved), (6, 3), "{counts:?}");
    assert_eq!(preview.entries, ["1.10.16.1", "45.13.0.2", "2a01:4f8::1"]);
}
