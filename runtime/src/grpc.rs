//! The gRPC serving both services share: reflection (v1 and v1alpha, so
//! every grpcurl works), health, and a SIGTERM drain with a deadline.

use std::{future::Future, path::Path, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    service::Routes,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
};

/// A service's `grpc.health.v1` name, e.g. `bangui.geo.v1.GeoService`.
pub fn service_name<S: NamedService>() -> &'static str {
    S::NAME
}

/// A gRPC server ready to serve: the service routes plus health and
/// reflection, on a bound listener.
#[derive(Debug)]
pub struct GrpcServer<H> {
    /// The services' own routes.
    pub routes: Routes,
    pub listener: TcpListener,
    /// Encoded descriptor sets for reflection (health's is added).
    pub descriptor_sets: &'static [&'static [u8]],
    pub health: HealthReporter,
    pub health_service: HealthServer<H>,
    /// Health names turned SERVING with `""` (see [`service_name`]).
    pub services: Vec<&'static str>,
    /// How long in-flight RPCs may take after shutdown.
    pub grace: Duration,
    /// TLS (and client-certificate verification); plaintext when `None`.
    pub tls: Option<ServerTlsConfig>,
}

/// Server TLS from PEM files: the certificate chain and key, and for mTLS
/// the CA that client certificates must chain to.
pub fn server_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read the TLS {what} {}", path.display()))
    };
    let identity = Identity::from_pem(read(cert, "certificate")?, read(key, "key")?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?)).client_auth_optional(false);
    }
    Ok(config)
}

impl<H: Health> GrpcServer<H> {
    /// Serves until `shutdown` resolves. Then health turns NOT_SERVING,
    /// `stopping` is cancelled (background tasks watch it), and in-flight
    /// RPCs get the grace period to finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        stopping: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut v1 = tonic_reflection::server::Builder::configure();
        let mut v1alpha = tonic_reflection::server::Builder::configure();
        for set in self.descriptor_sets.iter().copied().chain([tonic_health::pb::FILE_DESCRIPTOR_SET]) {
            v1 = v1.register_encoded_file_descriptor_set(set);
            v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
        }
        let reflection_v1 = v1.build_v1().context("reflection v1")?;
        let reflection_v1alpha = v1alpha.build_v1alpha().context("reflection v1alpha")?;

        for name in self.services.iter().copied().chain([""]) {
            self.health.set_service_status(name, ServingStatus::Serving).await;
        }
        let on_signal = {
            let reporter = self.health.clone();
            let stopping = stopping.clone();
            let services = self.services.clone();
            async move {
                shutdown.await;
                tracing::info!("shutdown requested: health NOT_SERVING, draining");
                for name in services.into_iter().chain([""]) {
                    reporter.set_service_status(name, ServingStatus::NotServing).await;
                }
                stopping.cancel();
            }
        };
        tokio::spawn(on_signal);

        let routes =
            self.routes.add_service(self.health_service).add_service(reflection_v1).add_service(reflection_v1alpha);
        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls).context("TLS configuration")?;
        }
        let server = builder
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), stopping.clone().cancelled_owned());
        let grace = self.grace;
        let stopped = stopping.clone();
        let served = tokio::select! {
            result = server => result.map_err(anyhow::Error::from),
            () = async move {
                stopped.cancelled().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace = ?grace, "in-flight RPCs did not finish within the grace period");
                Ok(())
            }
        };
        stopping.cancel();
        served
    }
}
