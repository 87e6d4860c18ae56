//! Reaching one control-plane endpoint: TCP (no delay), TLS when the
//! endpoint is `https://`, with the connect deadline.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Config;

/// The largest message the agent reads from the control plane.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// A PEM file, read at every connect: a renewed certificate is used from
/// the next connection on.
async fn read_pem(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path).await.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A channel to `endpoint`, connected.
pub async fn channel(config: &Config, endpoint: &str) -> anyhow::Result<Channel> {
    let mut target = Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(20))
        .keep_alive_timeout(std::time::Duration::from_secs(10));
    if endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &config.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca).await?));
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            tls = tls.identity(Identity::from_pem(read_pem(cert).await?, read_pem(key).await?));
        }
        if let Some(domain) = &config.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        target = target.tls_config(tls)?;
    }
    Ok(target.connect().await?)
}
