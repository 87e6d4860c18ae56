//! Jails and bans as the control-service offers them, on any host of the
//! fleet ([`Fleet`]): each operation a [`Command`] run on its host, every
//! change logged in the control database, and active bans placed on the
//! map through the geo-service.
//!
//! An operator's ban or unban also tells the blocklist mirror: an unban of
//! a ban an import made becomes an exception (imports do not ban it again
//! in that jail), and a ban by hand takes the address out of the imports'
//! hands (no import lifts it when its list drops it).

use std::{net::IpAddr, sync::Arc};

use tokio::time::Instant;

use crate::{
    clock::Clock,
    fleet::{Fleet, Target},
    geo_client::{Country, GeoClient},
    history::History,
    kinds::{ActionKind, Event},
    metrics::Metrics,
    store::{ActionLog, BlocklistStore, actions::JailAction},
};
use bangui_fail2ban::{
    ActiveBan, Fail2ban, Fail2banError, JailDetail, JailName, JailParams, JailStatus, ServerStatus,
    command::{Command, Reply},
};

/// Active bans with their countries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedBans {
    pub bans: Vec<(ActiveBan, Option<Country>)>,
    /// The geo-service answered.
    pub geo_available: bool,
}

/// The jail operations behind `JailService`.
#[derive(Debug, Clone)]
pub struct Jails {
    fleet: Fleet,
    actions: Arc<dyn ActionLog>,
    geo: GeoClient,
    history: History,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    /// The imports' bans (an operator's ban or unban changes who owns one).
    imports: Option<Arc<dyn BlocklistStore>>,
}

impl Jails {
    pub fn new(
        fleet: Fleet,
        actions: Arc<dyn ActionLog>,
        geo: GeoClient,
        history: History,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { fleet, actions, geo, history, metrics, clock, imports: None }
    }

    /// Tells the blocklist mirror about the operator's bans and unbans.
    pub fn with_imports(mut self, imports: Arc<dyn BlocklistStore>) -> Self {
        self.imports = Some(imports);
        self
    }

    /// The control-service's own fail2ban (the host `local`).
    pub fn fail2ban(&self) -> &Fail2ban {
        self.fleet.local()
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    async fn run(&self, host: &Target, command: Command, deadline: Instant) -> Result<Reply, Fail2banError> {
        self.fleet.run(host, &command, deadline).await
    }

    pub async fn server_status(&self, host: &Target, deadline: Instant) -> Result<ServerStatus, Fail2banError> {
        match self.run(host, Command::ServerStatus, deadline).await? {
            Reply::ServerStatus { status } => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn detail(&self, host: &Target, jail: &JailName, deadline: Instant) -> Result<JailDetail, Fail2banError> {
        match self.run(host, Command::JailDetail { jail: jail.to_string() }, deadline).await? {
            Reply::JailDetail { detail } => Ok(detail),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn start(
        &self,
        host: &Target,
        jail: &JailName,
        deadline: Instant,
    ) -> Result<(JailStatus, bool), Fail2banError> {
        let result = match self.run(host, Command::StartJail { jail: jail.to_string() }, deadline).await {
            Ok(Reply::Started { status, started }) => Ok((status, started)),
            Ok(other) => Err(unexpected(&other)),
            Err(error) => Err(error),
        };
        if !matches!(result, Ok((_, false))) {
            self.log(host, ActionKind::Start, Some(jail), None, String::new(), &result).await;
        }
        result
    }

    pub async fn stop(&self, host: &Target, jail: &JailName, deadline: Instant) -> Result<(), Fail2banError> {
        let result = match self.run(host, Command::StopJail { jail: jail.to_string() }, deadline).await {
            Ok(Reply::Stopped) => Ok(()),
            Ok(other) => Err(unexpected(&other)),
            Err(error) => Err(error),
        };
        self.log(host, ActionKind::Stop, Some(jail), None, String::new(), &result).await;
        result
    }

    pub async fn set_idle(
        &self,
        host: &Target,
        jail: &JailName,
        idle: bool,
        deadline: Instant,
    ) -> Result<bool, Fail2banError> {
        let result = match self.run(host, Command::SetIdle { jail: jail.to_string(), idle }, deadline).await {
            Ok(Reply::Idle { idle }) => Ok(idle),
            Ok(other) => Err(unexpected(&other)),
            Err(error) => Err(error),
        };
        self.log(host, ActionKind::Idle, Some(jail), None, format!("idle={idle}"), &result).await;
        result
    }

    pub async fn set_params(
        &self,
        host: &Target,
        jail: &JailName,
        params: JailParams,
        deadline: Instant,
    ) -> Result<(i64, i64, u32), Fail2banError> {
        let command = Command::SetParams {
            jail: jail.to_string(),
            bantime: params.bantime,
            findtime: params.findtime,
            maxretry: params.maxretry,
        };
        let result = match self.run(host, command, deadline).await {
            Ok(Reply::Params { bantime, findtime, maxretry }) => Ok((bantime, findtime, maxretry)),
            Ok(other) => Err(unexpected(&other)),
            Err(error) => Err(error),
        };
        let mut detail = Vec::new();
        if let Some(v) = params.bantime {
            detail.push(format!("bantime={v}"));
        }
        if let Some(v) = params.findtime {
            detail.push(format!("findtime={v}"));
        }
        if let Some(v) = params.maxretry {
            detail.push(format!("maxretry={v}"));
        }
        self.log(host, ActionKind::Params, Some(jail), None, detail.join(" "), &result).await;
        result
    }

    /// Adds (`add`) or removes an ignore-list entry; the list after.
    pub async fn change_ignore(
        &self,
        host: &Target,
        jail: &JailName,
        entry: &str,
        add: bool,
        deadline: Instant,
    ) -> Result<Vec<String>, Fail2banError> {
        let (jail_text, entry_text) = (jail.to_string(), entry.to_owned());
        let (command, kind) = if add {
            (Command::AddIgnore { jail: jail_text, entry: entry_text }, ActionKind::IgnoreAdd)
        } else {
            (Command::RemoveIgnore { jail: jail_text, entry: entry_text }, ActionKind::IgnoreRemove)
        };
        let result = match self.run(host, command, deadline).await {
            Ok(Reply::IgnoreList { entries }) => Ok(entries),
            Ok(other) => Err(unexpected(&other)),
            Err(error) => Err(error),
        };
        self.log(host, kind, Some(jail), Some(entry), String::new(), &result).await;
        result
    }

    pub async fn ban(
        &self,
        host: &Target,
        jail: &JailName,
        ip: IpAddr,
        deadline: Instant,
    ) -> Result<bool, Fail2banError> {
        let (newly, time) = match self.run(host, Command::Ban { jail: jail.to_string(), ip }, deadline).await {
            Ok(Reply::Banned { ban }) => (Ok(ban.is_some()), ban),
            Ok(other) => (Err(unexpected(&other)), None),
            Err(error) => (Err(error), None),
        };
        self.log(host, ActionKind::Ban, Some(jail), Some(&ip.to_string()), String::new(), &newly).await;
        // The blocklist mirror holds the host `local` only.
        if newly.is_ok()
            && host.is_local()
            && let Some(imports) = &self.imports
        {
            // Banned by hand now, whoever banned it before: no import lifts it.
            match imports.operator_banned(jail.as_str(), &ipnet::IpNet::from(ip)).await {
                Ok(true) => tracing::info!(%jail, %ip, "the operator's ban replaces a blocklist import's"),
                Ok(false) => {}
                Err(error) => tracing::error!(%error, %jail, %ip, "cannot take the ban out of the imports' hands"),
            }
        }
        if let Some((banned_at, ban_seconds)) = time {
            // Archived at once, with fail2ban's own ban time (its database
            // row, see `Fail2ban::ban_timed`): the sync then finds the same
            // (host, jail, ip, banned_at) and leaves it `manual`, as does
            // the host's agent's outbox delivery.
            self.history
                .record_manual(&host.id, jail.as_str(), &ip.to_string(), banned_at, ban_seconds, Event::Ban)
                .await;
        }
        newly
    }

    pub async fn unban(
        &self,
        host: &Target,
        ip: IpAddr,
        jail: Option<&JailName>,
        deadline: Instant,
    ) -> Result<u32, Fail2banError> {
        let command = Command::Unban { ip, jail: jail.map(ToString::to_string) };
        let (result, from) = match self.run(host, command, deadline).await {
            Ok(Reply::Unbanned { lifted, jails }) => (Ok(lifted), jails),
            Ok(other) => (Err(unexpected(&other)), Vec::new()),
            Err(error) => (Err(error), Vec::new()),
        };
        if matches!(result, Ok(n) if n > 0) {
            let now = self.clock.now();
            for jail in &from {
                self.history.record_manual(&host.id, jail, &ip.to_string(), now, 0, Event::Unban).await;
                if host.is_local() {
                    self.except_import(jail, ip, now).await;
                }
            }
        }
        let detail = result.as_ref().map(|n| format!("lifted={n}")).unwrap_or_default();
        self.log(host, ActionKind::Unban, jail, Some(&ip.to_string()), detail, &result).await;
        result
    }

    /// The operator lifted `ip` in `jail`: if an import had banned it, an
    /// exception keeps imports from banning it again there.
    async fn except_import(&self, jail: &str, ip: IpAddr, now: i64) {
        let Some(imports) = &self.imports else { return };
        match imports.operator_unbanned(jail, &ipnet::IpNet::from(ip), now).await {
            Ok(true) => tracing::info!(jail, %ip, "blocklist exception recorded: imports will not ban it again"),
            Ok(false) => {}
            Err(error) => tracing::error!(%error, jail, %ip, "cannot record the blocklist exception"),
        }
    }

    /// Every active ban of `host`.
    pub async fn active_bans(&self, host: &Target, deadline: Instant) -> Result<Vec<ActiveBan>, Fail2banError> {
        match self.run(host, Command::ActiveBans, deadline).await? {
            Reply::ActiveBans { bans } => Ok(bans),
            other => Err(unexpected(&other)),
        }
    }

    /// `bans` with their countries when the geo-service answers, none when
    /// it does not (the bans still come back).
    pub async fn locate(&self, bans: Vec<ActiveBan>) -> LocatedBans {
        if bans.is_empty() || !self.geo.is_configured() {
            let geo_available = bans.is_empty() && self.geo.is_configured();
            return LocatedBans { bans: bans.into_iter().map(|b| (b, None)).collect(), geo_available };
        }
        match self.geo.countries(bans.iter().map(|b| b.ip.as_str())).await {
            Ok(countries) => LocatedBans {
                bans: bans
                    .into_iter()
                    .map(|b| {
                        let country = countries.get(&b.ip).cloned();
                        (b, country)
                    })
                    .collect(),
                geo_available: true,
            },
            Err(error) => {
                tracing::warn!(%error, "geo-service unavailable: active bans without countries");
                LocatedBans { bans: bans.into_iter().map(|b| (b, None)).collect(), geo_available: false }
            }
        }
    }

    /// Logs a change that reached fail2ban (or was refused by it). Bad
    /// arguments never got there and are not logged. A failed log write
    /// does not undo the change: it is reported in the service log.
    async fn log<T>(
        &self,
        host: &Target,
        kind: ActionKind,
        jail: Option<&JailName>,
        ip: Option<&str>,
        detail: String,
        result: &Result<T, Fail2banError>,
    ) {
        if matches!(result, Err(Fail2banError::Invalid(_))) {
            return;
        }
        let ok = result.is_ok();
        let detail = match result {
            Ok(_) => detail,
            Err(error) => error.to_string(),
        };
        // The action log has no host column: another host's action says
        // which host it was in its detail.
        let detail =
            if host.is_local() { detail } else { format!("host={} {detail}", host.name).trim_end().to_owned() };
        self.metrics.jail_action(kind.as_str(), ok);
        let action = JailAction {
            at: self.clock.now(),
            action: kind,
            jail: jail.map(ToString::to_string),
            ip: ip.map(str::to_owned),
            detail,
            ok,
        };
        tracing::info!(action = kind.as_str(), jail = ?action.jail, ip = ?action.ip, ok, detail = %action.detail, "jail action");
        if let Err(error) = self.actions.record_action(&action).await {
            tracing::error!(%error, action = kind.as_str(), "cannot record the jail action in the control database");
        }
    }
}

/// A reply that does not answer the command sent (an agent of another
/// version, or a bug): refused rather than guessed at.
fn unexpected(reply: &Reply) -> Fail2banError {
    Fail2banError::Protocol(format!("the host answered another operation ({})", reply.label()))
}
