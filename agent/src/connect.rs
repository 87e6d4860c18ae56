//! Reaching one control-plane endpoint: TCP (no delay), TLS when the
//! endpoint is `https://`, with the connect deadline.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Config;

/// The largest message the agent reads from the control plane.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

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
            let pem = tokio::fs::read(ca).await.map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            let read =
                |path: &std::path::PathBuf| std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &config.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        target = target.tls_config(tls)?;
    }
    Ok(target.connect().await?)
}
