//! The mirror's invariant as a property: over random sequences of list
//! changes, operator bans and unbans, exceptions dropped, fail2ban restarts
//! (with and without its database) and imports of two sources of one jail,
//! after every import the jail a real fail2ban-server holds equals a
//! model's set:
//!
//! the union of the sources' lists (as each was last imported), minus the
//! operator's exceptions, plus every ban no import made.
//!
//! Each case starts a real fail2ban-server and the real control-service;
//! `BLOCKLIST_MODEL_CASES` sets how many cases run (default 8).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, time::Duration};

use bangui_e2e::{
    Authed, ControlService,
    fail2ban::{BLOCKLIST_JAIL, Fail2banOptions, Fail2banServer},
};
use bangui_proto::control::v1::{
    self as pb, blocklist_service_client::BlocklistServiceClient, jail_service_client::JailServiceClient,
};
use bangui_testkit::list_server::ListServer;
use proptest::{prelude::*, test_runner::TestCaseError};

/// The addresses the sequences play with.
const UNIVERSE: [&str; 8] =
    ["1.1.1.1", "8.8.4.4", "45.13.0.2", "77.88.8.8", "185.220.1.1", "2a01:4f8::1", "2606:4700::1111", "203.0.114.9"];

#[derive(Debug, Clone)]
enum Step {
    /// Source 0 or 1 now serves this subset of the universe (a bit mask).
    Serve(usize, u8),
    /// The leader imports source 0 or 1.
    Import(usize),
    /// UnbanIp by the operator, in the blocklist jail.
    OperatorUnban(usize),
    /// BanIp by the operator, in the blocklist jail.
    OperatorBan(usize),
    DropException(usize),
    /// fail2ban restarts; `true`: its database was deleted (every ban lost).
    Restart(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..2usize, any::<u8>()).prop_map(|(s, m)| Step::Serve(s, m)),
        4 => (0..2usize).prop_map(Step::Import),
        2 => (0..UNIVERSE.len()).prop_map(Step::OperatorUnban),
        2 => (0..UNIVERSE.len()).prop_map(Step::OperatorBan),
        1 => (0..UNIVERSE.len()).prop_map(Step::DropException),
        1 => any::<bool>().prop_map(Step::Restart),
    ]
}

/// What the jail must hold, and what decides it.
#[derive(Debug, Default)]
struct Model {
    served: [BTreeSet<String>; 2],
    /// Each source's list as last imported.
    stored: [BTreeSet<String>; 2],
    jail: BTreeSet<String>,
    /// Bans an import made and still answers for.
    owned: BTreeSet<String>,
    exceptions: BTreeSet<String>,
}

impl Model {
    fn import(&mut self, source: usize) {
        self.stored[source] = self.served[source].clone();
        let target: BTreeSet<String> =
            self.stored[0].union(&self.stored[1]).filter(|ip| !self.exceptions.contains(*ip)).cloned().collect();
        for ip in target.difference(&self.jail.clone()) {
            self.jail.insert(ip.clone());
            self.owned.insert(ip.clone());
        }
        for ip in self.owned.clone().difference(&target) {
            self.jail.remove(ip);
            self.owned.remove(ip);
        }
    }

    fn operator_unban(&mut self, ip: &str) {
        if self.jail.remove(ip) && self.owned.remove(ip) {
            self.exceptions.insert(ip.to_owned());
        }
    }

    fn operator_ban(&mut self, ip: &str) {
        self.jail.insert(ip.to_owned());
        self.owned.remove(ip);
    }
}

fn mask(bits: u8) -> BTreeSet<String> {
    UNIVERSE.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, ip)| (*ip).to_owned()).collect()
}

struct World {
    f2b: Fail2banServer,
    lists: ListServer,
    _control: ControlService,
    blocklists: BlocklistServiceClient<Authed>,
    jails: JailServiceClient<Authed>,
    ids: [i64; 2],
}

impl World {
    async fn start() -> World {
        let f2b = Fail2banServer::start_with(&Fail2banOptions { blocklist_jail: true, ..Fail2banOptions::default() });
        let lists = ListServer::start().await;
        lists.set("s0.txt", "");
        lists.set("s1.txt", "");
        let control = ControlService::start(&[
            "--fail2ban-socket",
            f2b.socket_str().leak(),
            "--blocklist-allow-private",
            "--lease-ttl",
            "2s",
            "--lease-retry",
            "200ms",
        ]);
        let mut blocklists = BlocklistServiceClient::new(control.authed().await);
        let jails = control.jails().await;
        let mut ids = [0; 2];
        for (i, id) in ids.iter_mut().enumerate() {
            let spec =
                pb::SourceSpec { name: format!("s{i}"), url: lists.url(&format!("s{i}.txt")), ..Default::default() };
            let created = blocklists.create_source(pb::CreateSourceRequest { spec: Some(spec) }).await.unwrap();
            *id = created.into_inner().source.unwrap().id;
        }
        World { f2b, lists, _control: control, blocklists, jails, ids }
    }

    fn banned(&self) -> BTreeSet<String> {
        self.f2b.banned(BLOCKLIST_JAIL).into_iter().collect()
    }

    /// Imports until fail2ban answers the control-service (after a restart).
    async fn import(&mut self, source: usize) -> pb::ImportRun {
        for _ in 0..100 {
            let request = pb::ImportNowRequest { id: self.ids[source], wait: true };
            let run = self.blocklists.import_now(request).await.unwrap().into_inner().runs.pop().unwrap();
            if run.status != "failed" {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the import kept failing");
    }

    /// Runs `steps`, checking the jail against the model after each import.
    async fn run(&mut self, steps: &[Step]) -> Result<(), TestCaseError> {
        let mut model = Model::default();
        for (n, step) in steps.iter().enumerate() {
            match step {
                Step::Serve(source, bits) => {
                    model.served[*source] = mask(*bits);
                    let body: Vec<&str> = model.served[*source].iter().map(String::as_str).collect();
                    self.lists.set(&format!("s{source}.txt"), body.join("\n").as_str());
                }
                Step::Import(source) if model.served[*source].is_empty() => {
                    // A list with no entry is refused: nothing changes.
                    let request = pb::ImportNowRequest { id: self.ids[*source], wait: true };
                    let run = self.blocklists.import_now(request).await.unwrap().into_inner().runs.pop().unwrap();
                    prop_assert_eq!(run.status.as_str(), "failed", "step {}: {:?}", n, run);
                    prop_assert_eq!(self.banned(), model.jail.clone(), "after step {} {:?} of {:?}", n, step, steps);
                }
                Step::Import(source) => {
                    let run = self.import(*source).await;
                    prop_assert!(run.status != "partial", "step {n} {step:?}: {run:?}");
                    model.import(*source);
                    prop_assert_eq!(self.banned(), model.jail.clone(), "after step {} {:?} of {:?}", n, step, steps);
                }
                Step::OperatorUnban(i) => {
                    let request = pb::UnbanIpRequest {
                        ip: UNIVERSE[*i].into(),
                        jail: Some(BLOCKLIST_JAIL.into()),
                        ..Default::default()
                    };
                    self.jails.unban_ip(request).await.unwrap();
                    model.operator_unban(UNIVERSE[*i]);
                }
                Step::OperatorBan(i) => {
                    let request =
                        pb::BanIpRequest { ip: UNIVERSE[*i].into(), jail: BLOCKLIST_JAIL.into(), ..Default::default() };
                    self.jails.ban_ip(request).await.unwrap();
                    model.operator_ban(UNIVERSE[*i]);
                }
                Step::DropException(i) => {
                    let request =
                        pb::DeleteExceptionRequest { jail: BLOCKLIST_JAIL.into(), entry: UNIVERSE[*i].into() };
                    let dropped = self.blocklists.delete_exception(request).await;
                    prop_assert_eq!(dropped.is_ok(), model.exceptions.remove(UNIVERSE[*i]), "step {} {:?}", n, step);
                }
                Step::Restart(lose_database) => {
                    self.f2b.stop();
                    if *lose_database {
                        std::fs::remove_file(self.f2b.database()).unwrap();
                        model.jail.clear();
                    }
                    self.f2b.restart();
                    // fail2ban restores its bans from its database a moment
                    // after it answers `status`.
                    let deadline = std::time::Instant::now() + Duration::from_secs(15);
                    while self.banned() != model.jail && std::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    prop_assert_eq!(self.banned(), model.jail.clone(), "fail2ban restored after step {}", n);
                }
            }
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("BLOCKLIST_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(8)
}

proptest! {
    // Each case runs real processes: few cases, no long shrinking.
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 4, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn after_every_import_the_jail_equals_the_model(steps in proptest::collection::vec(step(), 6..16)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let mut world = World::start().await;
            world.run(&steps).await
        })?;
    }
}
