//! `Fail2ban::jail_bans` (`get <jail> banip` read as a stream): against a
//! real fail2ban-server, compared with what fail2ban-client prints;
//! against fake-fail2ban at the ban list's item limit; against a socket
//! that stops in the middle of a reply.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use bangui_e2e::{
    fail2ban::{BLOCKLIST_JAIL, Fail2banOptions, Fail2banServer},
    fake_fail2ban::FakeFail2ban,
};
use bangui_fail2ban::{
    Fail2ban, Fail2banError, JailBans, JailName, SocketClient, SocketSettings, StartSettings, Unobserved,
    banlist::{MAX_BAN_LIST_ITEMS, canonical_ban},
};

fn client(socket: PathBuf, reply_timeout: Duration, max_in_flight: usize) -> Fail2ban {
    let settings =
        SocketSettings { path: socket, connect_timeout: Duration::from_secs(2), reply_timeout, max_in_flight };
    let start =
        StartSettings { client_binary: "fail2ban-client".into(), config_dir: None, timeout: Duration::from_secs(30) };
    Fail2ban::new(SocketClient::new(settings, Arc::new(Unobserved)), start)
}

fn jail(name: &str) -> JailName {
    JailName::parse("jail", name).unwrap()
}

/// A few thousand bans of every kind a list holds, given to fail2ban as
/// a list would give them.
fn mixed_bans() -> Vec<String> {
    let mut bans = Vec::new();
    for i in 0..1200u32 {
        bans.push(std::net::Ipv4Addr::from(0x0B00_0000 + i * 7).to_string());
    }
    for i in 0..1200u32 {
        bans.push(format!("2001:db8:{:x}::{:x}", i / 50, i % 50 + 1));
    }
    for i in 0..300u32 {
        bans.push(format!("198.{}.{}.0/24", 18 + i / 256, i % 256));
    }
    for i in 0..300u32 {
        bans.push(format!("2001:db8:{:x}::/48", 0x8000 + i));
    }
    bans.extend(
        ["::ffff:203.0.113.9", "2001:DB8:FFFF:0::1", "10.1.2.3/8", "2001:db8:ffff::1", "host.example", "192.0.2.1/32"]
            .map(str::to_owned),
    );
    bans
}

#[tokio::test]
async fn jail_bans_are_what_fail2ban_client_shows() {
    let f2b = Fail2banServer::start_with(&Fail2banOptions {
        blocklist_jail: true,
        blocklist_without_action: true,
        ..Fail2banOptions::default()
    });
    for chunk in mixed_bans().chunks(500) {
        let mut args = vec!["set", BLOCKLIST_JAIL, "banip"];
        args.extend(chunk.iter().map(String::as_str));
        f2b.client_ok(&args);
    }
    // fail2ban-client's view, made canonical the same way.
    let shown = f2b.banned(BLOCKLIST_JAIL);
    let mut expected = JailBans::default();
    for text in &shown {
        match canonical_ban(text) {
            Some(net) => expected.bans.push(net),
            None => expected.unreadable += 1,
        }
    }
    let expected = expected.normalize();
    // fail2ban merged the two forms of one address itself (3 006 given, 3 005 held).
    assert_eq!((shown.len(), expected.bans.len(), expected.unreadable), (3005, 3004, 1));

    let fail2ban = client(f2b.socket(), Duration::from_secs(10), 4);
    let bans = fail2ban.jail_bans(&jail(BLOCKLIST_JAIL)).await.unwrap();
    assert_eq!(bans, expected);
    assert!(bans.bans.contains(&"203.0.113.9/32".parse().unwrap()));
    assert!(bans.bans.contains(&"10.0.0.0/8".parse().unwrap()));
    assert!(bans.bans.contains(&"2001:db8:8000::/48".parse().unwrap()));

    assert_eq!(fail2ban.jail_bans(&jail("alpha")).await.unwrap(), JailBans::default());
    let missing = fail2ban.jail_bans(&jail("nope")).await.unwrap_err();
    assert!(matches!(&missing, Fail2banError::UnknownJail(name) if name == "nope"), "{missing}");
}

#[tokio::test]
async fn a_jail_over_the_item_limit_is_an_error_not_a_part_of_it() {
    let fake = FakeFail2ban::start(&["blocklist-import=-1"]);
    let count = MAX_BAN_LIST_ITEMS + 1;
    let per_command = 50_000;
    for from in (0..count).step_by(per_command) {
        let chunk: Vec<String> = (from..(from + per_command).min(count))
            .map(|i| std::net::Ipv4Addr::from(0x0B00_0000 + i as u32).to_string())
            .collect();
        fake.ban(BLOCKLIST_JAIL, &chunk, per_command);
    }
    let fail2ban = client(fake.socket(), Duration::from_secs(10), 4);
    let error = fail2ban.jail_bans(&jail(BLOCKLIST_JAIL)).await.unwrap_err();
    assert!(matches!(error, Fail2banError::ReplyTooLarge { .. }), "{error}");
    assert!(error.to_string().contains("more than 2000000 bans"), "{error}");

    // At the limit it reads them all.
    let last = std::net::Ipv4Addr::from(0x0B00_0000 + MAX_BAN_LIST_ITEMS as u32).to_string();
    fake.raw(&["set", BLOCKLIST_JAIL, "unbanip", &last]);
    let bans = fail2ban.jail_bans(&jail(BLOCKLIST_JAIL)).await.unwrap();
    assert_eq!((bans.bans.len(), bans.unreadable), (MAX_BAN_LIST_ITEMS, 0));
    assert_eq!(bans.bans[0], "11.0.0.0/32".parse().unwrap());
}

/// A "fail2ban" that sends the first part of a ban list and then nothing.
#[tokio::test]
async fn a_reply_that_stops_ends_at_the_reply_timeout_and_holds_the_slot_till_then() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stalls.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(b"\x80\x05\x95\x00\x00\x01\x00\x00\x00\x00\x00K\x00]\x94(").await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let fail2ban = client(socket, Duration::from_millis(500), 1);
    let started = std::time::Instant::now();
    let reading = tokio::spawn({
        let fail2ban = fail2ban.clone();
        async move { fail2ban.jail_bans(&jail(BLOCKLIST_JAIL)).await }
    });
    // The one slot is taken: another command waits for it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = tokio::time::timeout(Duration::from_millis(200), fail2ban.ping()).await;
    assert!(waiting.is_err(), "ping ran beside the ban list: {waiting:?}");
    let error = reading.await.unwrap().unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, Fail2banError::Timeout { .. }), "{error}");
    assert!(error.to_string().contains("the reply stopped"), "{error}");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "{took:?}");
}
