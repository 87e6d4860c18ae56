//! The `ban` CIDR policy's broadest network, end to end: a real
//! fail2ban-server runs the `blocklist-import` jail, the real
//! control-service imports from a local HTTP server. A list's network
//! broader than its source allows (by default IPv4 /12, IPv6 /32; at most
//! /8 and /16) is counted in `cidr_skipped` and never reaches fail2ban;
//! a bound outside what a source may set is refused at CreateSource and
//! UpdateSource, naming the field, and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use bangui_e2e::{
    Authed, ControlService,
    fail2ban::{BLOCKLIST_JAIL, Fail2banOptions, Fail2banServer},
};
use bangui_proto::control::v1::{self as pb, blocklist_service_client::BlocklistServiceClient};
use bangui_testkit::list_server::ListServer;
use tonic::Code;
use tonic_types::StatusExt;

/// Networks of every width around the bounds, and one address.
const BROAD: &str = "32.0.0.0/3 ; an eighth of IPv4\n\
                     4000::/2\n\
                     6.0.0.0/7\n\
                     7.0.0.0/8\n\
                     2.0.0.0/11\n\
                     1.0.0.0/12 ; as wide as Spamhaus DROP goes\n\
                     2a0b::/32\n\
                     2a0c::/31\n\
                     2a0d::/16\n\
                     2a0e::/15\n\
                     45.13.0.2\n";

fn spec(name: &str, url: &str, v4: u32, v6: u32) -> pb::SourceSpec {
    pb::SourceSpec {
        name: name.into(),
        url: url.into(),
        enabled: true,
        cidr_policy: "ban".into(),
        ban_min_prefix_v4: v4,
        ban_min_prefix_v6: v6,
        ..Default::default()
    }
}

async fn import(client: &mut BlocklistServiceClient<Authed>, id: i64) -> pb::ImportRun {
    let response = client.import_now(pb::ImportNowRequest { id, wait: true }).await.unwrap().into_inner();
    response.runs.into_iter().next().expect("the import ended within the wait")
}

fn banned(f2b: &Fail2banServer) -> BTreeSet<String> {
    f2b.banned(BLOCKLIST_JAIL).into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_never_bans_a_network_broader_than_its_source_allows() {
    let f2b = Fail2banServer::start_with(&Fail2banOptions { blocklist_jail: true, ..Fail2banOptions::default() });
    let lists = ListServer::start().await;
    lists.set("default.txt", BROAD);
    lists.set("broadest.txt", BROAD);
    let control = ControlService::start(&["--fail2ban-socket", &f2b.socket_str(), "--blocklist-allow-private"]);
    let mut client = BlocklistServiceClient::new(control.authed().await);

    // Bounds a source may not set: refused, naming the field, nothing stored.
    let url = lists.url("default.txt");
    for (v4, v6, field) in [
        (7, 0, "ban_min_prefix_v4"),
        (1, 0, "ban_min_prefix_v4"),
        (33, 0, "ban_min_prefix_v4"),
        (0, 15, "ban_min_prefix_v6"),
        (0, 129, "ban_min_prefix_v6"),
        (0, 300, "ban_min_prefix_v6"),
    ] {
        let request = pb::CreateSourceRequest { spec: Some(spec("refused", &url, v4, v6)) };
        let error = client.create_source(request).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "/{v4} /{v6}: {error:?}");
        assert_eq!(error.get_details_bad_request().unwrap().field_violations[0].field, field, "{error:?}");
        assert!(error.message().contains(field), "{}", error.message());
    }
    let listed = client.list_sources(pb::ListSourcesRequest {}).await.unwrap().into_inner().sources;
    assert!(listed.is_empty(), "{listed:?}");

    // The defaults: IPv4 /12, IPv6 /32, shown as such.
    let created = client.create_source(pb::CreateSourceRequest { spec: Some(spec("default", &url, 0, 0)) }).await;
    let source = created.unwrap().into_inner().source.unwrap();
    let shown = source.spec.clone().unwrap();
    assert_eq!((shown.ban_min_prefix_v4, shown.ban_min_prefix_v6), (12, 32));
    let preview = client
        .preview_source(pb::PreviewSourceRequest { id: source.id, limit: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut previewed = preview.entries.clone();
    previewed.sort();
    assert_eq!(previewed, ["1.0.0.0/12", "2a0b::/32", "45.13.0.2"]);
    let run = import(&mut client, source.id).await;
    assert_eq!(run.status, "ok", "{run:?}");
    let c = run.counts.unwrap();
    assert_eq!((c.valid, c.cidr_skipped, c.newly_banned, c.invalid), (3, 8, 3, 0), "{c:?}");
    assert_eq!(preview.counts.unwrap().cidr_skipped, 8);
    assert_eq!(banned(&f2b), set(&["1.0.0.0/12", "2a0b::/32", "45.13.0.2"]));

    // The broadest a source may set: /8 and IPv6 /16. Still never an
    // eighth of IPv4, a /7, or an IPv6 /15.
    let broadest = spec("broadest", &lists.url("broadest.txt"), 8, 16);
    let source = client.create_source(pb::CreateSourceRequest { spec: Some(broadest) }).await.unwrap();
    let id = source.into_inner().source.unwrap().id;
    let run = import(&mut client, id).await;
    assert_eq!(run.status, "ok", "{run:?}");
    let c = run.counts.unwrap();
    assert_eq!((c.valid, c.cidr_skipped, c.newly_banned, c.already_banned), (7, 4, 4, 3), "{c:?}");
    assert_eq!(
        banned(&f2b),
        set(&["7.0.0.0/8", "2.0.0.0/11", "1.0.0.0/12", "2a0b::/32", "2a0c::/31", "2a0d::/16", "45.13.0.2"])
    );

    // An update to a bound it may not have changes nothing.
    let error = client
        .update_source(pb::UpdateSourceRequest { id, spec: Some(spec("broadest", &lists.url("broadest.txt"), 7, 16)) })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let kept = client.get_source(pb::GetSourceRequest { id }).await.unwrap().into_inner().source.unwrap();
    assert_eq!(kept.spec.unwrap().ban_min_prefix_v4, 8);
}
