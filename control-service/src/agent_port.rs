//! The agent port (`--agent-listen`): `bangui.agent.v1.AgentService` alone,
//! outside the session gate, with the gRPC port's TLS settings, its own
//! connection cap, its own in-flight cap on calls being answered (Enroll,
//! an Attach before its Welcome; `--grpc-max-in-flight` places), and a
//! decode limit: [`MAX_MESSAGE_BYTES`] holds an agent's largest message,
//! a command result of `bangui_fail2ban::command::MAX_JSON_BYTES` (a
//! Hello with 1 000 jail names of 100 characters is a tenth of it). An
//! agent sends results only for commands sent to it, one message at a
//! time per stream.
//!
//! Agent streams live for hours, so the port's shutdown does not wait for
//! them: `stopping` ends every stream (UNAVAILABLE: the agent attaches to
//! another replica), then the server drains what is left within the grace.

use std::time::Duration;

use bangui_proto::agent::v1::agent_service_server::AgentServiceServer;
use bangui_runtime::{
    grpc::{InFlightLimitLayer, ServeLimits, incoming},
    limits::LimitedIncoming,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, ServerTlsConfig};

use crate::api::agent::AgentApi;

/// The largest message the agent port decodes.
pub const MAX_MESSAGE_BYTES: usize = bangui_fail2ban::command::MAX_JSON_BYTES + 64 * 1024;
/// Calls open at once on one connection of the agent port.
const MAX_STREAMS_PER_CONNECTION: u32 = 4;
/// A TLS handshake that does not finish within this frees its place.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `api` on `listener` until `stopping` is cancelled and the
/// remaining calls have drained (at most `grace`).
pub async fn serve(
    listener: TcpListener,
    api: AgentApi,
    tls: Option<ServerTlsConfig>,
    limits: ServeLimits,
    grace: Duration,
    stopping: CancellationToken,
) -> anyhow::Result<()> {
    let mut builder = Server::builder()
        // One agent holds one stream (and enrolls once): a connection that
        // opens many is not an agent.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.timeout(HANDSHAKE_TIMEOUT))?;
    }
    let service = AgentServiceServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let server = builder
        .layer(InFlightLimitLayer::named(limits.max_in_flight, "agent calls in flight"))
        .add_service(service)
        .serve_with_incoming_shutdown(
            LimitedIncoming::new(incoming(listener), limits.max_connections, "agent"),
            stopping.clone().cancelled_owned(),
        );
    tokio::select! {
        served = server => served.map_err(anyhow::Error::from),
        () = async {
            stopping.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "agent streams did not end within the grace period");
            Ok(())
        }
    }
}
