//! Startup stages, serving, and graceful shutdown.
//!
//! [`Application::build`] runs the stages in order (databases → cache →
//! metrics → gRPC listener); a failing stage names itself in the error and nothing is
//! served. [`Application::run_until_stopped`] serves until the shutdown
//! future resolves, then turns health to NOT_SERVING, drains in-flight RPCs
//! within the grace period, stops the metrics endpoint and the periodic
//! cache flush, flushes the cache one last time and closes its database.

use std::{fmt, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bangui_proto::geo::v1::{FILE_DESCRIPTOR_SET, geo_service_server::GeoServiceServer};
use bangui_runtime::{
    StageContext,
    grpc::{GrpcServer, service_name},
    guard::Gated,
    serve_metrics,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    api::GeoApi, cache::AnswerCache, config::Config, fallback::Fallback, lookup::Lookups, metrics::Metrics,
    mmdb::DatabaseSet, reload::Reloader, resolve::Resolver, transport::GeoRoutes,
};

/// A startup stage, named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Databases,
    Cache,
    Fallback,
    Metrics,
    Grpc,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Databases => "databases",
            Stage::Cache => "cache",
            Stage::Fallback => "fallback",
            Stage::Metrics => "metrics",
            Stage::Grpc => "grpc",
        })
    }
}

/// A startup failure of the geo-service.
pub type StartupError = bangui_runtime::StartupError<Stage>;

/// A built, not yet serving, geo-service.
#[derive(Debug)]
pub struct Application {
    routes: GeoRoutes,
    limits: bangui_runtime::grpc::ServeLimits,
    reloader: Reloader,
    watch: bool,
    cache: Arc<AnswerCache>,
    metrics: Metrics,
    grpc: TcpListener,
    /// The plaintext health-only port (`--health-listen`), if any.
    health_listener: Option<TcpListener>,
    metrics_listener: TcpListener,
    shutdown_grace: Duration,
    tls: Option<tonic::transport::ServerTlsConfig>,
    auth_token: Option<bangui_runtime::guard::SharedToken>,
    flush_interval: Duration,
}

impl Application {
    /// Runs the startup stages. Listeners are bound here, so the addresses
    /// are known (port 0 in tests) before serving starts.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let sources = config.mmdb.clone();
        let databases = tokio::task::spawn_blocking(move || DatabaseSet::load(&sources))
            .await
            .stage(Stage::Databases)?
            .stage(Stage::Databases)?;
        for db in databases.databases() {
            tracing::info!(
                database = %db.name,
                r#type = %db.database_type,
                schema = ?db.schema,
                ip_version = db.ip_version,
                build_epoch = db.build_time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                "database loaded"
            );
            if db.name.starts_with("builtin:") {
                tracing::warn!(database = %db.name, "serving the embedded sample database: made-up data, not for production");
            }
        }

        let store = crate::store::connect(&config.database_url)
            .await
            .with_context(|| {
                format!("cannot open the persistent cache {} (--database-url)", config.database_url_redacted())
            })
            .stage(Stage::Cache)?;
        tracing::info!(database_url = %config.database_url_redacted(), backend = store.backend(), "persistent cache ready");
        let metrics = Metrics::new();
        let cache = Arc::new(AnswerCache::new(store, config.cache_limits(), metrics.clone()));

        metrics.set_databases(&databases);
        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--metrics-listen)", config.metrics_listen))
            .stage(Stage::Metrics)?;

        let tls = config.server_tls().stage(Stage::Grpc)?;
        let grpc = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", config.listen))
            .stage(Stage::Grpc)?;
        let health_listener = bangui_runtime::grpc::bind_health(config.health_listen).await.stage(Stage::Grpc)?;

        let max_batch = usize::try_from(config.max_batch).unwrap_or(usize::MAX);
        let resolver = Resolver::new(databases);
        let reloader = Reloader::new(config.mmdb.clone(), resolver.clone(), metrics.clone());
        let fallback = match config.fallback() {
            Some(settings) => {
                tracing::warn!(
                    url = %settings.base_url,
                    "HTTP fallback enabled: addresses the local databases cannot place are sent to {} \
                     (plain HTTP on the free tier: they leave this host unencrypted)",
                    settings.base_url
                );
                if settings.api_key.is_some() && settings.base_url.starts_with("http://") {
                    tracing::warn!("--fallback-api-key goes over plain HTTP: use an https:// --fallback-url");
                }
                Some(Arc::new(Fallback::new(settings, metrics.clone()).stage(Stage::Fallback)?))
            }
            None => None,
        };
        let lookups = Lookups::new(resolver, cache.clone(), fallback, metrics.clone());
        let api = GeoApi::new(lookups, reloader.clone(), metrics.clone(), max_batch);
        let batches = usize::try_from(config.max_concurrent_batches).unwrap_or(1);
        let queued = usize::try_from(config.max_queued_batches).unwrap_or(0);
        Ok(Self {
            routes: GeoRoutes::new(api, max_batch, batches, queued),
            limits: config.serve_limits(),
            reloader,
            watch: config.watch,
            cache,
            metrics,
            grpc,
            health_listener,
            metrics_listener,
            shutdown_grace: config.shutdown_grace,
            flush_interval: config.flush_interval,
            tls,
            auth_token: config.auth_token.clone().map(bangui_runtime::guard::SharedToken::new),
        })
    }

    /// The address the gRPC server listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
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
        let geo = self.routes;
        let stopping = CancellationToken::new();
        let grpc_addr = self.grpc.local_addr()?;
        let metrics_addr = self.metrics_listener.local_addr()?;

        let metrics = self.metrics;
        let metrics_server = tokio::spawn(serve_metrics(
            self.metrics_listener,
            self.limits.max_connections,
            move || metrics.render(),
            stopping.clone(),
        ));
        let flusher = tokio::spawn(flush_periodically(self.cache.clone(), self.flush_interval, stopping.clone()));
        let watcher = if self.watch {
            match self.reloader.clone().watch(stopping.clone()) {
                Ok(task) => Some(task),
                Err(error) => {
                    // Serving without hot reload beats not serving.
                    tracing::error!(%error, "cannot watch the database files; ReloadDatabases still works");
                    None
                }
            }
        } else {
            None
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        let server = GrpcServer {
            routes: match self.auth_token {
                Some(token) => Routes::new(Gated::new(geo, token)),
                None => Routes::new(geo),
            },
            listener: self.grpc,
            descriptor_sets: &[FILE_DESCRIPTOR_SET],
            health,
            health_service,
            services: vec![service_name::<GeoServiceServer<GeoApi>>()],
            grace: self.shutdown_grace,
            tls: self.tls,
            health_listener: self.health_listener,
            // NODELAY, keepalive, bounded streams and in-flight requests.
            limits: self.limits,
        };
        tracing::info!(%grpc_addr, %metrics_addr, health_addr, "serving");
        let served = server.serve(shutdown, stopping.clone()).await;
        stopping.cancel();
        let _ = metrics_server.await;
        let _ = flusher.await;
        if let Some(watcher) = watcher {
            let _ = watcher.await;
        }
        // The last flush: what was answered up to the end is not lost.
        match self.cache.flush().await {
            Ok(written) => tracing::info!(written, "cache flushed"),
            Err(error) => tracing::error!(%error, "final cache flush failed; pending rows are lost"),
        }
        self.cache.close().await;
        tracing::info!("stopped");
        served
    }
}

async fn flush_periodically(cache: Arc<AnswerCache>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                if let Err(error) = cache.flush().await {
                    tracing::warn!(%error, "cache flush failed; will retry");
                }
            }
        }
    }
}
