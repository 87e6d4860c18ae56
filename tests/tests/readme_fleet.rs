//! The README's "Fleet quick start", run as written: its shell blocks are
//! read from README.md and run by bash against a pure control plane
//! (`--local-fail2ban=false`) with three real fail2ban-servers and their
//! agents, and a fourth host enrolled by hand as the README shows. Only
//! what belongs to this run is put in: the control-service's addresses for
//! `127.0.0.1:50052` and `127.0.0.1:50053`, host-2's socket for
//! `.local/hosts/host-2/fail2ban/run/f2b.sock`, a fourth fail2ban's for
//! `/var/run/fail2ban/fail2ban.sock`, and the built binary for
//! `fail2ban-agent`. The three hosts are enrolled with the README's own
//! token form, as `scripts/run-local --hosts 3` does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use bangui_e2e::{
    ControlService,
    agent::AgentProcess,
    binary,
    fail2ban::{Fail2banOptions, Fail2banServer},
    grpcurl_json, workspace_root,
};
use bangui_proto::control::v1::SetupRequest;

/// The password the README's forms log in with.
const PASSWORD: &str = "a long master password";

/// The `sh` blocks of the README's Fleet quick start, unindented.
fn fleet_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme.find("\n## Fleet quick start\n").expect("README has a Fleet quick start");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(indent) = line.strip_suffix("```sh").filter(|i| i.trim().is_empty()).map(str::len) else {
            continue;
        };
        let mut block = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            block.push_str(line.get(indent..).unwrap_or(line.trim_start()));
            block.push('\n');
        }
        blocks.push(block);
    }
    blocks
}

fn bash(script: &str, dir: &Path) -> Output {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's block failed:\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn hosts(control: &ControlService, bearer: &str) -> serde_json::Value {
    let addr = control.grpc_addr.to_string();
    grpcurl_json(&["-plaintext", "-H", bearer, &addr, "bangui.control.v1.HostService/ListHosts"])
}

fn connected(list: &serde_json::Value, name: &str) -> bool {
    list["hosts"].as_array().unwrap().iter().any(|h| h["name"] == name && h["connected"] == true)
}

async fn wait_connected(control: &ControlService, bearer: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !connected(&hosts(control, bearer), name) {
        assert!(Instant::now() < deadline, "{name} not connected: {}", hosts(control, bearer));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_fleet_quick_start_runs_as_written() {
    let blocks = fleet_blocks();
    assert_eq!(blocks.len(), 4, "run-local, the tour, the token, the agent: {blocks:#?}");
    assert_eq!(blocks[0].trim(), "scripts/run-local --reset --hosts 3");
    let (tour, token_form, agent_form) = (&blocks[1], &blocks[2], &blocks[3]);

    let control = ControlService::start(&["--local-fail2ban=false"]);
    let addr = control.grpc_addr.to_string();
    let agent_addr = control.agent_addr().expect("the agent port").to_string();
    let mut auth = control.auth().await;
    auth.setup(SetupRequest { password: PASSWORD.into(), setup_token: control.setup_token() }).await.unwrap();
    let put_in = |block: &str| block.replace("127.0.0.1:50052", &addr).replace("127.0.0.1:50053", &agent_addr);
    let login = put_in(&tour[..tour.find("\n#").unwrap()]);
    let bearer_of = |dir: &Path| {
        let out = bash(&format!("{login}\necho \"$TOKEN\""), dir);
        format!("authorization: Bearer {}", String::from_utf8_lossy(&out.stdout).trim())
    };

    // Three hosts, each enrolled with the README's token form.
    let options = Fail2banOptions { extra_jails: vec!["sshd-demo".into()], ..Fail2banOptions::default() };
    let servers: Vec<Fail2banServer> = (0..3).map(|_| Fail2banServer::start_with(&options)).collect();
    let mut agents = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        bash(&format!("{login}\n{}", put_in(token_form)), dir.path());
        let name = format!("host-{}", i + 1);
        let token = dir.path().join("enroll-token");
        let args = ["--host-name", &name, "--enroll-token-file", token.to_str().unwrap()];
        let agent =
            AgentProcess::start(&format!("http://{agent_addr}"), &dir.path().join("agent"), &server.socket(), &args);
        agents.push((agent, dir));
    }
    let bearer = bearer_of(Path::new("/"));
    for i in 1..=3 {
        wait_connected(&control, &bearer, &format!("host-{i}")).await;
    }

    // The tour: ListHosts, ListJails over every host, a ban on host-2 only,
    // then UnbanIp on every host.
    let host2 = servers[1].socket_str();
    let out = bash(&put_in(tour).replace(".local/hosts/host-2/fail2ban/run/f2b.sock", &host2), Path::new("/"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for i in 1..=3 {
        assert!(stdout.contains(&format!("\"name\": \"host-{i}\"")), "ListHosts names host-{i}:\n{stdout}");
    }
    let banip = stdout.lines().find(|l| l.contains("203.0.113.7") && !l.contains('"'));
    assert!(banip.is_some(), "host-2's fail2ban-client shows the ban:\n{stdout}");
    assert!(stdout.contains("\"unbanned\": 1"), "UnbanIp with all_hosts lifts it on host-2:\n{stdout}");
    for (i, server) in servers.iter().enumerate() {
        let acted = std::fs::read_to_string(server.dir().join("run/dummy.txt")).unwrap_or_default();
        assert_eq!(acted.contains("203.0.113.7"), i == 1, "host-{}'s ban actions: {acted}", i + 1);
    }

    // A real host by hand: a token, then the README's agent command.
    let web3 = Fail2banServer::start_with(&options);
    let dir = tempfile::tempdir().unwrap();
    bash(&format!("{login}\n{}", put_in(token_form)), dir.path());
    let command = put_in(agent_form)
        .replace("fail2ban-agent --", &format!("{} --", binary("fail2ban-agent").display()))
        .replace("/var/run/fail2ban/fail2ban.sock", &web3.socket_str());
    let mut agent = Command::new("bash")
        .arg("-c")
        .arg(format!("exec {}", command.trim().replace("\\\n", " ")))
        .current_dir(dir.path())
        .env("FAIL2BAN_AGENT_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_connected(&control, &bearer, "web-3").await;
    assert!(dir.path().join("agent-state/identity.json").exists(), "the identity is kept in --state-dir");
    let _ = agent.kill();
    let _ = agent.wait();
    drop(agents);
}
