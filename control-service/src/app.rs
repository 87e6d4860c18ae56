//! Startup stages, serving, and graceful shutdown.
//!
//! [`Application::build`] runs the stages in order (database → clients →
//! metrics → gRPC listener). A failing stage names itself in the error,
//! what the earlier stages built is closed in reverse order, and nothing is
//! served. fail2ban and the geo-service being down is not a startup
//! failure: the service serves and says so in its health statuses
//! (`fail2ban`, `geo`, `database`), and the clients reconnect by themselves.
//! [`Application::run_until_stopped`] serves until the shutdown future
//! resolves, then turns health to NOT_SERVING, drains in-flight RPCs within
//! the grace period, stops the probes and closes the database.

use std::{fmt, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bangui_proto::control::v1::{
    FILE_DESCRIPTOR_SET, auth_service_server::AuthServiceServer, blocklist_service_server::BlocklistServiceServer,
    cluster_service_server::ClusterServiceServer, history_service_server::HistoryServiceServer,
    host_service_server::HostServiceServer, jail_service_server::JailServiceServer,
    settings_service_server::SettingsServiceServer,
};
use bangui_runtime::{
    StageContext,
    grpc::{GrpcServer, ServeLimits, service_name},
    guard::Gated,
    serve_metrics,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    api::{
        agent::AgentApi,
        auth::{AuthApi, OPEN_METHODS},
        blocklist::BlocklistApi,
        cluster::ClusterApi,
        history::HistoryApi,
        hosts::HostApi,
        jail::JailApi,
        settings::SettingsApi,
    },
    auth::{Auth, SessionGate},
    blocklist::{BlocklistDeps, Blocklists, fetch::Fetcher},
    clock::{Clock, SystemClock},
    cluster::Cluster,
    config::Config,
    fleet::Fleet,
    geo_client::GeoClient,
    history::{History, queries::HistoryQueries},
    hosts::{Hosts, events::HostEvents},
    jails::Jails,
    jobs::{JobContext, JobKind, Scheduler},
    leader::Elector,
    metrics::Metrics,
    settings::RuntimeSettings,
    store::{Pool, Stores},
};
use bangui_fail2ban::{Fail2ban, SocketClient};

/// Health service names of the dependencies.
pub const HEALTH_FAIL2BAN: &str = "fail2ban";
pub const HEALTH_GEO: &str = "geo";
pub const HEALTH_DATABASE: &str = "database";

/// How long the database probe waits: a pool keeps retrying a refused
/// connection for up to its acquire timeout (5 s), so a database that is
/// down would otherwise look up to a probe for that long.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A startup stage, named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Database,
    Auth,
    Clients,
    Leader,
    Scheduler,
    Metrics,
    Grpc,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Database => "database",
            Stage::Auth => "auth",
            Stage::Clients => "clients",
            Stage::Leader => "leader",
            Stage::Scheduler => "scheduler",
            Stage::Metrics => "metrics",
            Stage::Grpc => "grpc",
        })
    }
}

/// A startup failure of the control-service.
pub type StartupError = bangui_runtime::StartupError<Stage>;

/// A built, not yet serving, control-service.
#[derive(Debug)]
pub struct Application {
    jails: Jails,
    auth: Auth,
    blocklists: Blocklists,
    settings: RuntimeSettings,
    tls: Option<tonic::transport::ServerTlsConfig>,
    queries: HistoryQueries,
    cluster: Cluster,
    hosts: Hosts,
    /// Stores the hosts' outbox events.
    host_events: HostEvents,
    /// The agent port (`--agent-listen`).
    agent: TcpListener,
    elector: Elector,
    scheduler: Scheduler,
    lease_retry: Duration,
    fail2ban: Fail2ban,
    /// The host `local` is served (`--local-fail2ban`).
    local_fail2ban: bool,
    geo: GeoClient,
    pool: Arc<dyn Pool>,
    metrics: Metrics,
    grpc: TcpListener,
    /// The plaintext health-only port (`--health-listen`), if any.
    health_listener: Option<TcpListener>,
    metrics_listener: TcpListener,
    probe_interval: Duration,
    shutdown_grace: Duration,
    limits: ServeLimits,
    max_request_bytes: usize,
}

impl Application {
    /// Runs the startup stages. Listeners are bound here, so the addresses
    /// are known (port 0 in tests) before serving starts.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let stores = crate::store::connect(&config.database_url)
            .await
            .with_context(|| {
                format!("cannot open the control database {} (--database-url)", config.database_url_redacted())
            })
            .stage(Stage::Database)?;
        tracing::info!(database_url = %config.database_url_redacted(), backend = stores.pool.backend(), "control database ready");

        // From here on a failing stage closes the database before returning.
        match Self::build_rest(&config, stores.clone()).await {
            Ok(app) => Ok(app),
            Err(error) => {
                stores.pool.close().await;
                Err(error)
            }
        }
    }

    async fn build_rest(config: &Config, stores: Stores) -> Result<Self, StartupError> {
        let metrics = Metrics::new();
        // The one clock: everything that asks what time it is asks this.
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let settings = RuntimeSettings::new(stores.settings.clone(), clock.clone());
        let mut auth = Auth::new(
            stores.auth.clone(),
            settings.clone(),
            clock.clone(),
            config.throttle(),
            config.admin_password_hash.is_some(),
        )
        .with_limits(config.hash_limits(), config.login_slowdown_max, metrics.clone());
        if let Some(phc) = &config.admin_password_hash {
            auth.bootstrap(phc).await.stage(Stage::Auth)?;
        }
        let socket = SocketClient::new(config.socket_settings(), Arc::new(metrics.clone()));
        // Not probed here: fail2ban being away is no reason to refuse to start.
        let fail2ban = Fail2ban::new(socket, config.start_settings()).with_database(config.fail2ban_db.clone());
        // main refuses this first (exit 2); here too for embedders of the library.
        config.check().map_err(anyhow::Error::msg).stage(Stage::Clients)?;
        if let Some(warning) = config.geo_plaintext_token_warning() {
            tracing::warn!("{warning}");
        }
        let geo_tls = config.geo_tls().stage(Stage::Clients)?;
        let geo = GeoClient::new(
            config.geo_endpoint.as_deref(),
            config.geo_timeout,
            config.geo_resolve_interval,
            geo_tls,
            config.geo_auth_token.as_ref(),
        )
        .stage(Stage::Clients)?;
        if !geo.is_configured() {
            tracing::info!("no --geo-endpoint: active bans come without countries");
        }
        let history =
            History::new(stores.history.clone(), fail2ban.clone(), geo.clone(), settings.clone(), clock.clone())
                .with_metrics(metrics.clone())
                .with_local(config.local_fail2ban);

        let elector_settings = config.elector().stage(Stage::Leader)?;
        tracing::info!(replica = %elector_settings.replica, ttl = ?elector_settings.ttl, "replica identity");
        let lease_retry = elector_settings.retry;
        let replica = elector_settings.replica.clone();
        let hosts = Hosts::new(stores.hosts.clone(), &replica, config.agent_max_streams as usize)
            .with_gauge(metrics.agent_streams())
            .with_notices(stores.notices.clone());
        let jails = Jails::new(
            {
                let fleet = Fleet::new(fail2ban.clone(), hosts.clone(), stores.hosts.clone());
                if config.local_fail2ban { fleet } else { fleet.without_local() }
            },
            stores.actions.clone(),
            geo.clone(),
            history.clone(),
            metrics.clone(),
            clock.clone(),
        )
        .with_imports(stores.blocklists.clone());
        let (elector, leadership) = Elector::new(stores.lease.clone(), elector_settings, metrics.clone());
        let fetcher = Fetcher::new(config.fetch_settings()).stage(Stage::Clients)?;
        let blocklists = Blocklists::new(BlocklistDeps {
            store: stores.blocklists.clone(),
            ledger: stores.ledger.clone(),
            replica,
            fail2ban: fail2ban.clone(),
            fetcher,
            history: history.clone(),
            settings: settings.clone(),
            clock: clock.clone(),
            config: config.blocklist_settings(),
        });
        blocklists.start().await.stage(Stage::Database)?;
        let context = JobContext {
            auth: auth.clone(),
            blocklists: blocklists.clone(),
            history: history.clone(),
            geo: geo.clone(),
            settings: settings.clone(),
        };
        // Refuse schedules the scheduler could not read before anything runs.
        let schedules = settings.get().await.stage(Stage::Scheduler)?.schedules;
        for kind in JobKind::ALL {
            if let Some(schedule) = kind.schedule(&schedules) {
                crate::settings::check_cron(kind.family(), schedule).stage(Stage::Scheduler)?;
            }
        }
        let scheduler =
            Scheduler::new(stores.ledger.clone(), leadership.clone(), clock.clone(), context, metrics.clone());
        let queries = HistoryQueries::new(stores.history.clone(), clock.clone());
        let host_events = HostEvents::new(history.clone());
        let cluster = Cluster::new(
            stores.lease.clone(),
            stores.ledger.clone(),
            leadership,
            settings.clone(),
            blocklists.clone(),
            clock,
        );

        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--metrics-listen)", config.metrics_listen))
            .stage(Stage::Metrics)?;
        let tls = config.server_tls().stage(Stage::Grpc)?;
        let limits = config.serve_limits().stage(Stage::Grpc)?;
        let grpc = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", config.listen))
            .stage(Stage::Grpc)?;
        let health_listener = bangui_runtime::grpc::bind_health(config.health_listen).await.stage(Stage::Grpc)?;
        let agent = TcpListener::bind(config.agent_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--agent-listen)", config.agent_listen))
            .stage(Stage::Grpc)?;
        // Last, so a start that fails leaves no token behind.
        auth.prepare_setup(&config.setup_token_path()).await.stage(Stage::Auth)?;
        Ok(Self {
            jails,
            auth,
            blocklists,
            settings,
            tls,
            queries,
            cluster,
            hosts,
            host_events,
            agent,
            elector,
            scheduler,
            lease_retry,
            fail2ban,
            local_fail2ban: config.local_fail2ban,
            geo,
            pool: stores.pool,
            metrics,
            grpc,
            health_listener,
            metrics_listener,
            probe_interval: config.probe_interval,
            shutdown_grace: config.shutdown_grace,
            limits,
            max_request_bytes: config.max_request_bytes(),
        })
    }

    /// The address the gRPC server listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The address of the agent port.
    pub fn agent_addr(&self) -> SocketAddr {
        self.agent.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The address of the plaintext health-only port, if there is one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// The address the metrics endpoint listens on.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then drains and stops.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let health_addr = self.health_addr().map(tracing::field::display);
        let (health, health_service) = tonic_health::server::health_reporter();
        // The elector renews until the jobs have drained (its own token); the
        // scheduler stops taking slots as soon as shutdown starts.
        let elector = Arc::new(self.elector);
        let elector_stop = CancellationToken::new();
        let elector_task = tokio::spawn({
            let elector = elector.clone();
            let stop = elector_stop.clone();
            async move { elector.run(stop).await }
        });
        // Every control service sits behind the session gate; only the
        // methods in OPEN_METHODS pass without a session.
        let gate = SessionGate::new(self.auth.clone(), OPEN_METHODS);
        let setup_auth = self.auth.clone();
        // Every service decodes at most --grpc-max-request-bytes per message.
        let max = self.max_request_bytes;
        let routes = Routes::new(Gated::new(
            JailServiceServer::new(JailApi::new(self.jails)).max_decoding_message_size(max),
            gate.clone(),
        ))
        .add_service(Gated::new(
            AuthServiceServer::new(AuthApi::new(self.auth)).max_decoding_message_size(max),
            gate.clone(),
        ))
        .add_service(Gated::new(
            SettingsServiceServer::new(SettingsApi::new(self.settings)).max_decoding_message_size(max),
            gate.clone(),
        ))
        .add_service(Gated::new(
            ClusterServiceServer::new(ClusterApi::new(self.cluster)).max_decoding_message_size(max),
            gate.clone(),
        ))
        .add_service(Gated::new(
            BlocklistServiceServer::new(BlocklistApi::new(self.blocklists)).max_decoding_message_size(max),
            gate.clone(),
        ))
        .add_service(Gated::new(
            HistoryServiceServer::new(HistoryApi::new(self.queries)).max_decoding_message_size(max),
            gate.clone(),
        ))
        .add_service(Gated::new(
            HostServiceServer::new(HostApi::new(self.hosts.clone())).max_decoding_message_size(max),
            gate,
        ));

        let stopping = CancellationToken::new();
        let grpc_addr = self.grpc.local_addr()?;
        let agent_addr = self.agent.local_addr()?;
        // The agent port: no session gate (agents bring their own
        // credential), the gRPC port's TLS, its own stream cap.
        // Commands other replicas write for the hosts whose streams are here.
        let relay = tokio::spawn(self.hosts.clone().relay(stopping.clone()));
        let agent_server = tokio::spawn(crate::agent_port::serve(
            self.agent,
            AgentApi::new(self.hosts, stopping.clone()).with_events(self.host_events),
            self.tls.clone(),
            self.limits,
            self.shutdown_grace,
            stopping.clone(),
        ));
        let metrics_addr = self.metrics_listener.local_addr()?;
        let metrics = self.metrics.clone();
        let metrics_server = tokio::spawn(serve_metrics(
            self.metrics_listener,
            self.limits.max_connections,
            move || metrics.render(),
            stopping.clone(),
        ));

        // Dependencies are probed once before serving, so health is right from the start.
        let probes = Probes {
            local_fail2ban: self.local_fail2ban,
            fail2ban: self.fail2ban,
            geo: self.geo,
            pool: self.pool.clone(),
            metrics: self.metrics,
            health: health.clone(),
            database_was_up: std::sync::atomic::AtomicBool::new(true),
        };
        let mut fail2ban_was_up = probes.probe_all(None).await;
        let prober = {
            let stop = stopping.clone();
            let every = self.probe_interval;
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = ticks.tick() => fail2ban_was_up = probes.probe_all(Some(fail2ban_was_up)).await,
                    }
                }
            })
        };

        let server = GrpcServer {
            routes,
            listener: self.grpc,
            descriptor_sets: &[FILE_DESCRIPTOR_SET],
            health,
            health_service,
            services: vec![
                service_name::<JailServiceServer<JailApi>>(),
                service_name::<AuthServiceServer<AuthApi>>(),
                service_name::<SettingsServiceServer<SettingsApi>>(),
                service_name::<ClusterServiceServer<ClusterApi>>(),
                service_name::<HistoryServiceServer<HistoryApi>>(),
                service_name::<BlocklistServiceServer<BlocklistApi>>(),
                service_name::<HostServiceServer<HostApi>>(),
            ],
            grace: self.shutdown_grace,
            tls: self.tls,
            health_listener: self.health_listener,
            limits: self.limits,
        };
        tracing::info!(%grpc_addr, %metrics_addr, %agent_addr, health_addr, "serving");
        let scheduler_task = tokio::spawn(self.scheduler.clone().run(stopping.clone(), self.lease_retry));
        // While no password exists, this replica's setup token file follows the database's token.
        let setup_token_task = tokio::spawn({
            let stop = stopping.clone();
            async move { setup_auth.keep_setup_token_file(stop).await }
        });
        let served = server.serve(shutdown, stopping.clone()).await;
        // Shutdown: no new runs, running jobs finish (or are cancelled), then
        // the lease goes so a follower takes over at once.
        match scheduler_task.await {
            Ok(Err(error)) => tracing::error!(%error, "scheduler failed"),
            Err(error) => tracing::error!(%error, "scheduler task failed"),
            Ok(Ok(())) => {}
        }
        self.scheduler.drain(self.shutdown_grace).await;
        elector_stop.cancel();
        let held = elector_task.await.unwrap_or(None);
        elector.release(held).await;
        let _ = prober.await;
        let _ = relay.await;
        let _ = setup_token_task.await;
        let _ = metrics_server.await;
        match agent_server.await {
            Ok(Err(error)) => tracing::error!(%error, "the agent port failed"),
            Err(error) => tracing::error!(%error, "the agent port task failed"),
            Ok(Ok(())) => {}
        }
        self.pool.close().await;
        tracing::info!("stopped");
        served
    }
}

/// The per-dependency health probes.
struct Probes {
    /// The host `local` is served (`--local-fail2ban`).
    local_fail2ban: bool,
    fail2ban: Fail2ban,
    geo: GeoClient,
    pool: Arc<dyn Pool>,
    metrics: Metrics,
    health: HealthReporter,
    /// The database's previous answer: its changes are logged, not every probe.
    database_was_up: std::sync::atomic::AtomicBool,
}

impl Probes {
    /// Probes the local fail2ban; returns whether it is up.
    async fn probe_fail2ban(&self, was_up: Option<bool>) -> bool {
        let fail2ban = self.fail2ban.ping().await;
        let up = fail2ban.is_ok();
        match (was_up, &fail2ban) {
            (None, Ok(())) => tracing::info!(socket = %self.fail2ban.socket_path().display(), "fail2ban answers"),
            (Some(false), Ok(())) => {
                tracing::info!("fail2ban is back");
                // A fail2ban that comes back started afresh: idle flags set earlier are gone.
                self.fail2ban.forget_idle();
            }
            (Some(true) | None, Err(error)) => {
                tracing::warn!(%error, "fail2ban is unavailable; serving anyway, it is picked up when it answers")
            }
            _ => {}
        }
        self.report(HEALTH_FAIL2BAN, up).await;
        up
    }

    /// Probes everything once; returns whether fail2ban is up. `was_up` is
    /// the previous answer (`None` at the first probe), for logging
    /// transitions and noticing a restarted fail2ban.
    async fn probe_all(&self, was_up: Option<bool>) -> bool {
        // Without the host `local` there is no fail2ban here to probe.
        let up = self.local_fail2ban && self.probe_fail2ban(was_up).await;

        if self.geo.is_configured() {
            let geo_up = matches!(self.geo.is_serving().await, Ok(true));
            self.report(HEALTH_GEO, geo_up).await;
        }
        let db = match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, self.pool.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {DATABASE_PROBE_TIMEOUT:?}")),
        };
        let db_up = db.is_ok();
        let db_was_up = self.database_was_up.swap(db_up, std::sync::atomic::Ordering::Relaxed);
        match (db_was_up, db) {
            (true, Err(error)) => tracing::warn!(%error, "control database unavailable"),
            (false, Ok(())) => tracing::info!("control database is back"),
            _ => {}
        }
        self.report(HEALTH_DATABASE, db_up).await;
        up
    }

    async fn report(&self, dependency: &'static str, up: bool) {
        self.metrics.set_dependency_up(dependency, up);
        let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.health.set_service_status(dependency, status).await;
    }
}
