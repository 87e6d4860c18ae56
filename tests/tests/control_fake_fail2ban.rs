//! The fake fail2ban of the benchmarks (testkit's `fake-fail2ban`): its
//! replies are real fail2ban 1.0.2's byte for byte, command by command,
//! and the real control-service works against it (GetServerStatus,
//! GetJail, BanIp, UnbanIp).

use bangui_e2e::{
    ControlService,
    fail2ban::{BLOCKLIST_JAIL, Fail2banOptions, Fail2banServer},
    fake_fail2ban::{FakeFail2ban, exchange, exchange_bytes},
};
use bangui_proto::control::v1 as pb;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The same commands to a real fail2ban-server (jails `alpha`, `beta` and
/// `blocklist-import`) and to the fake with the same jails: the same
/// bytes back. `status <jail>` differs only in the log files fail2ban
/// reads (the fake reads none), so it is compared as fail2ban-client
/// prints it.
#[test]
fn the_fake_answers_as_fail2ban_does_byte_for_byte() {
    let real = Fail2banServer::start_with(&Fail2banOptions {
        blocklist_jail: true,
        blocklist_without_action: true,
        ..Fail2banOptions::default()
    });
    let database = real.database().display().to_string();
    let fake = FakeFail2ban::start_with(&["alpha=3600", "beta=3600", "blocklist-import=-1"], Some(&database));

    let script: &[&[&str]] = &[
        &["ping"],
        &["version"],
        &["status"],
        &["get", "dbfile"],
        &["get", "alpha", "bantime"],
        &["get", BLOCKLIST_JAIL, "bantime"],
        &["get", "beta", "maxretry"],
        &["get", "beta", "findtime"],
        &["get", BLOCKLIST_JAIL, "banip"],
        // A mix as blocklists hold them, with what fail2ban makes of it:
        // a duplicate, a network with host bits, an IPv4-mapped address,
        // a non-canonical IPv6, a name it cannot parse.
        &[
            "set",
            BLOCKLIST_JAIL,
            "banip",
            "192.0.2.1",
            "198.51.100.0/24",
            "2001:db8::1",
            "2001:db8:1::/48",
            "::ffff:203.0.113.9",
            "host.example",
            "10.1.2.3/8",
            "2001:DB8:0:0::7",
            "192.0.2.1",
        ],
        &["set", BLOCKLIST_JAIL, "banip", "192.0.2.1", "192.0.2.2"],
        &["get", BLOCKLIST_JAIL, "banip"],
        // Another address than the other jail's: fail2ban pickles one
        // address banned in two jails as one cached object when it can
        // (a back-reference the fake does not make).
        &["set", "alpha", "banip", "192.0.2.77"],
        &["banned"],
        &["banned", "192.0.2.1", "192.0.2.1/32", "203.0.113.9", "2001:db8::99"],
        &["get", BLOCKLIST_JAIL, "banned", "192.0.2.1", "192.0.2.99"],
        &["get", BLOCKLIST_JAIL, "banned", "10.0.0.0/8"],
        // fail2ban finds a ban to lift only by its own text of it.
        &["set", BLOCKLIST_JAIL, "unbanip", "192.0.2.2/32", "::ffff:203.0.113.9", "2001:DB8::7"],
        &["set", BLOCKLIST_JAIL, "unbanip", "192.0.2.2", "203.0.113.9", "2001:db8::7", "192.0.2.200"],
        &["set", BLOCKLIST_JAIL, "unbanip", "--report-absent", "192.0.2.200"],
        // A network that is not a ban lifts the bans inside it.
        &["set", BLOCKLIST_JAIL, "unbanip", "2001:db8::/32"],
        &["unban", "192.0.2.1", "192.0.2.77"],
        &["get", BLOCKLIST_JAIL, "banip"],
        &["get", "nope", "banip"],
        &["set", "nope", "banip", "192.0.2.1"],
        &["status", "nope"],
        &["frobnicate"],
        &["get", "alpha", "nothing"],
        &["set", "alpha", "nothing", "x"],
        &["get"],
        &["set", "alpha", "idle", "on"],
        &["set", "alpha", "idle", "off"],
        &["set", "alpha", "addignoreip", "10.0.0.0/8"],
        &["get", "alpha", "ignoreip"],
        &["set", "alpha", "delignoreip", "10.0.0.0/8"],
        &["set", "alpha", "bantime", "600"],
        &["get", "alpha", "bantime"],
        &["echo", "a", "b"],
        &["unban", "--all"],
        &["get", BLOCKLIST_JAIL, "banip"],
    ];
    for command in script {
        let from_real = exchange(&real.socket(), command).unwrap();
        let from_fake = exchange(&fake.socket(), command).unwrap();
        assert_eq!(hex(&from_fake), hex(&from_real), "{command:?}");
    }
    // A request that is not a pickle: the bare `ERROR: …` string.
    let junk = b"not a pickle<F2B_END_COMMAND>";
    assert_eq!(
        hex(&exchange_bytes(&fake.socket(), junk).unwrap()),
        hex(&exchange_bytes(&real.socket(), junk).unwrap())
    );

    // status <jail>, as fail2ban-client prints it, but for the log files.
    let printed = |socket: &str, args: &[&str]| -> Vec<String> {
        let out = std::process::Command::new("fail2ban-client").arg("-s").arg(socket).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.contains("File list")).map(str::to_owned).collect()
    };
    real.client_ok(&["set", BLOCKLIST_JAIL, "banip", "192.0.2.5", "2001:db8::5"]);
    printed(&fake.socket_str(), &["set", BLOCKLIST_JAIL, "banip", "192.0.2.5", "2001:db8::5"]);
    for args in [
        &["status", BLOCKLIST_JAIL][..],
        &["status", BLOCKLIST_JAIL, "short"],
        &["status", "beta"],
        &["get", BLOCKLIST_JAIL, "banip"],
    ] {
        assert_eq!(printed(&fake.socket_str(), args), printed(&real.socket_str(), args), "{args:?}");
    }
}

#[tokio::test]
async fn the_control_service_works_against_the_fake() {
    let fake = FakeFail2ban::start(&["blocklist-import=-1", "sshd=3600"]);
    let socket = fake.socket_str();
    let control = ControlService::start(&["--fail2ban-socket", &socket, "--probe-interval", "200ms"]);
    let mut jails = control.jails().await;

    let status =
        jails.get_server_status(pb::GetServerStatusRequest { ..Default::default() }).await.unwrap().into_inner();
    assert!(status.online, "{status:?}");
    assert_eq!((status.version.as_str(), status.jail_count), ("1.0.2", 2));

    let ban = |ip: &str| pb::BanIpRequest { jail: "sshd".into(), ip: ip.into(), ..Default::default() };
    assert!(jails.ban_ip(ban("192.0.2.10")).await.unwrap().into_inner().newly_banned);
    assert!(jails.ban_ip(ban("2001:DB8::10")).await.unwrap().into_inner().newly_banned);
    assert!(!jails.ban_ip(ban("192.0.2.10")).await.unwrap().into_inner().newly_banned, "already banned");

    let sshd =
        jails.get_jail(pb::GetJailRequest { jail: "sshd".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((sshd.bantime_seconds, sshd.findtime_seconds, sshd.maxretry), (3600, 600, 5));
    let mut ips: Vec<&str> = sshd.bans.iter().map(|b| b.ip.as_str()).collect();
    ips.sort_unstable();
    assert_eq!(ips, ["192.0.2.10", "2001:db8::10"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for b in &sshd.bans {
        let at = b.banned_at.as_ref().unwrap().seconds;
        assert!((at - now).abs() <= 5, "banned at {at}, now {now}");
        assert_eq!(b.expires_at.as_ref().unwrap().seconds - at, 3600);
    }
    let summary =
        jails.get_server_status(pb::GetServerStatusRequest { ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((summary.currently_banned, summary.total_banned), (2, 2));

    let unban = |ip: &str, jail: Option<&str>| pb::UnbanIpRequest {
        ip: ip.into(),
        jail: jail.map(str::to_owned),
        ..Default::default()
    };
    assert_eq!(jails.unban_ip(unban("192.0.2.10", Some("sshd"))).await.unwrap().into_inner().unbanned, 1);
    assert_eq!(jails.unban_ip(unban("192.0.2.10", Some("sshd"))).await.unwrap().into_inner().unbanned, 0);
    assert_eq!(jails.unban_ip(unban("2001:db8::10", None)).await.unwrap().into_inner().unbanned, 1);
    let missing = jails.get_jail(pb::GetJailRequest { jail: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // What the fake holds now, read with fail2ban's own client.
    let out = std::process::Command::new("fail2ban-client").args(["-s", &socket, "get", "sshd", "banip"]).output();
    assert_eq!(String::from_utf8_lossy(&out.unwrap().stdout).trim(), "");
}
