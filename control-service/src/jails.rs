//! Jails and bans as the control-service offers them: fail2ban's typed
//! commands, every change logged in the control database, and active bans
//! placed on the map through the geo-service.
//!
//! An operator's ban or unban also tells the blocklist mirror: an unban of
//! a ban an import made becomes an exception (imports do not ban it again
//! in that jail), and a ban by hand takes the address out of the imports'
//! hands (no import lifts it when its list drops it).

use std::{net::IpAddr, sync::Arc};

use crate::{
    clock::Clock,
    geo_client::{Country, GeoClient},
    history::History,
    kinds::{ActionKind, Event},
    metrics::Metrics,
    store::{ActionLog, BlocklistStore, actions::JailAction, history::LOCAL_HOST},
};
use bangui_fail2ban::{ActiveBan, Fail2ban, Fail2banError, JailDetail, JailName, JailParams, JailStatus, ServerStatus};

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
    fail2ban: Fail2ban,
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
        fail2ban: Fail2ban,
        actions: Arc<dyn ActionLog>,
        geo: GeoClient,
        history: History,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { fail2ban, actions, geo, history, metrics, clock, imports: None }
    }

    /// Tells the blocklist mirror about the operator's bans and unbans.
    pub fn with_imports(mut self, imports: Arc<dyn BlocklistStore>) -> Self {
        self.imports = Some(imports);
        self
    }

    pub fn fail2ban(&self) -> &Fail2ban {
        &self.fail2ban
    }

    pub async fn server_status(&self) -> Result<ServerStatus, Fail2banError> {
        self.fail2ban.server_status().await
    }

    pub async fn list(&self) -> Result<Vec<JailStatus>, Fail2banError> {
        Ok(self.fail2ban.server_status().await?.jails)
    }

    pub async fn detail(&self, jail: &JailName) -> Result<JailDetail, Fail2banError> {
        self.fail2ban.jail_detail(jail).await
    }

    pub async fn start(&self, jail: &JailName) -> Result<(JailStatus, bool), Fail2banError> {
        let started = self.fail2ban.start_jail(jail).await;
        if !matches!(started, Ok(false)) {
            self.log(ActionKind::Start, Some(jail), None, String::new(), &started).await;
        }
        let started = started?;
        Ok((self.fail2ban.jail_status(jail).await?, started))
    }

    pub async fn stop(&self, jail: &JailName) -> Result<(), Fail2banError> {
        let result = self.fail2ban.stop_jail(jail).await;
        self.log(ActionKind::Stop, Some(jail), None, String::new(), &result).await;
        result
    }

    pub async fn set_idle(&self, jail: &JailName, idle: bool) -> Result<bool, Fail2banError> {
        let result = self.fail2ban.set_idle(jail, idle).await;
        self.log(ActionKind::Idle, Some(jail), None, format!("idle={idle}"), &result).await;
        result
    }

    pub async fn set_params(&self, jail: &JailName, params: JailParams) -> Result<(i64, i64, u32), Fail2banError> {
        let result = self.fail2ban.set_params(jail, params).await;
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
        self.log(ActionKind::Params, Some(jail), None, detail.join(" "), &result).await;
        result
    }

    pub async fn add_ignore(&self, jail: &JailName, entry: &str) -> Result<Vec<String>, Fail2banError> {
        let result = self.fail2ban.add_ignore(jail, entry).await;
        self.log(ActionKind::IgnoreAdd, Some(jail), Some(entry), String::new(), &result).await;
        result
    }

    pub async fn remove_ignore(&self, jail: &JailName, entry: &str) -> Result<Vec<String>, Fail2banError> {
        let result = self.fail2ban.remove_ignore(jail, entry).await;
        self.log(ActionKind::IgnoreRemove, Some(jail), Some(entry), String::new(), &result).await;
        result
    }

    pub async fn ban(&self, jail: &JailName, ip: IpAddr) -> Result<bool, Fail2banError> {
        let (newly, time) = match self.fail2ban.ban_timed(jail, ip).await {
            Ok(time) => (Ok(time.is_some()), time),
            Err(error) => (Err(error), None),
        };
        self.log(ActionKind::Ban, Some(jail), Some(&ip.to_string()), String::new(), &newly).await;
        if newly.is_ok()
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
            // (jail, ip, banned_at) and leaves it `manual`.
            self.history
                .record_manual(LOCAL_HOST, jail.as_str(), &ip.to_string(), banned_at, ban_seconds, Event::Ban)
                .await;
        }
        newly
    }

    pub async fn unban(&self, ip: IpAddr, jail: Option<&JailName>) -> Result<u32, Fail2banError> {
        // The jails it is banned in, for the archive's unban events.
        let from: Vec<String> = match jail {
            Some(jail) => vec![jail.to_string()],
            None => self.fail2ban.jails_banning(ip).await.unwrap_or_default(),
        };
        let result = self.fail2ban.unban(ip, jail).await;
        if matches!(result, Ok(n) if n > 0) {
            let now = self.clock.now();
            for jail in &from {
                self.history.record_manual(LOCAL_HOST, jail, &ip.to_string(), now, 0, Event::Unban).await;
                self.except_import(jail, ip, now).await;
            }
        }
        let detail = result.as_ref().map(|n| format!("lifted={n}")).unwrap_or_default();
        self.log(ActionKind::Unban, jail, Some(&ip.to_string()), detail, &result).await;
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

    /// Every active ban; countries when the geo-service answers, none when
    /// it does not (the bans still come back).
    pub async fn active_bans(&self) -> Result<LocatedBans, Fail2banError> {
        let bans = self.fail2ban.active_bans().await?;
        if bans.is_empty() || !self.geo.is_configured() {
            let geo_available = bans.is_empty() && self.geo.is_configured();
            return Ok(LocatedBans { bans: bans.into_iter().map(|b| (b, None)).collect(), geo_available });
        }
        match self.geo.countries(bans.iter().map(|b| b.ip.as_str())).await {
            Ok(countries) => Ok(LocatedBans {
                bans: bans
                    .into_iter()
                    .map(|b| {
                        let country = countries.get(&b.ip).cloned();
                        (b, country)
                    })
                    .collect(),
                geo_available: true,
            }),
            Err(error) => {
                tracing::warn!(%error, "geo-service unavailable: active bans without countries");
                Ok(LocatedBans { bans: bans.into_iter().map(|b| (b, None)).collect(), geo_available: false })
            }
        }
    }

    /// Logs a change that reached fail2ban (or was refused by it). Bad
    /// arguments never got there and are not logged. A failed log write
    /// does not undo the change: it is reported in the service log.
    async fn log<T>(
        &self,
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
