//! Joining the fleet once: the one-time token traded for the host's
//! credential, which is saved before anything else happens.

use bangui_proto::agent::v1::{EnrollRequest, agent_service_client::AgentServiceClient};

use crate::{
    Config, connect,
    identity::{self, Identity},
};

/// The saved identity, or a new one from enrolling with the token.
pub async fn identity(config: &Config) -> anyhow::Result<Identity> {
    if let Some(identity) = Identity::load(&config.state_dir)? {
        return Ok(identity);
    }
    let token = token(config)?;
    let host_id = identity::host_id(&config.state_dir)?;
    let host_name = config.host_name.clone().unwrap_or_else(hostname);
    let mut last_error = None;
    for endpoint in &config.control_endpoint {
        let channel = match connect::channel(config, endpoint).await {
            Ok(channel) => channel,
            Err(error) => {
                tracing::warn!(%endpoint, error = %format!("{error:#}"), "cannot reach the control plane to enroll");
                last_error = Some(error);
                continue;
            }
        };
        let mut client = AgentServiceClient::new(channel).max_decoding_message_size(connect::MAX_MESSAGE_BYTES);
        let request = EnrollRequest { token: token.clone(), host_id: host_id.clone(), host_name: host_name.clone() };
        // A refusal (a used or expired token) is final: another replica
        // would say the same.
        let reply = client
            .enroll(request)
            .await
            .map_err(|status| anyhow::anyhow!("enrollment refused: {:?}: {}", status.code(), status.message()))?;
        let reply = reply.into_inner();
        let identity = Identity { host_id: reply.host_id, host_name: reply.host_name, credential: reply.credential };
        identity.save(&config.state_dir)?;
        tracing::info!(host_id = %identity.host_id, host_name = %identity.host_name, "enrolled");
        return Ok(identity);
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no --control-endpoint given")))
}

/// The enrollment token from its file or the flag.
fn token(config: &Config) -> anyhow::Result<String> {
    let token = match (&config.enroll_token_file, &config.enroll_token) {
        (Some(path), _) => {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--enroll-token-file {}: {e}", path.display()))?
        }
        (None, Some(token)) => token.clone(),
        (None, None) => anyhow::bail!(
            "this host has no identity in {} yet: give --enroll-token-file (or FAIL2BAN_AGENT_ENROLL_TOKEN) \
             with a token from HostService/CreateEnrollmentToken",
            config.state_dir.display()
        ),
    };
    let token = token.trim().to_owned();
    anyhow::ensure!(!token.is_empty() && token.len() <= 512, "the enrollment token is empty or too long");
    Ok(token)
}

/// This machine's hostname (the kernel's), or `host`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}
