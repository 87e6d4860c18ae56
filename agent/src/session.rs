//! The host's one live stream to the control plane.
//!
//! An attempt: connect to the next endpoint, open `Attach` with the
//! credential, send Hello (this process's `instance`, the versions, the
//! jails), wait for Welcome, then send a Heartbeat every
//! `Welcome.heartbeat_seconds` until the stream ends. A stream that ends,
//! a replica that drains, a network that drops: the next attempt goes to
//! the next endpoint after a short random wait ([`Backoff`]), so the host
//! is back on another replica within a moment. A refused credential
//! (revoked) ends the agent: retrying cannot help, and the operator sees
//! the unit fail.

use std::time::Duration;

use bangui_fail2ban::Fail2ban;
use bangui_proto::agent::v1::{
    AttachRequest, AttachResponse, Heartbeat, Hello, JailState, Welcome, agent_service_client::AgentServiceClient,
    attach_request, attach_response,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status, metadata::MetadataValue};

use crate::{
    Config,
    backoff::Backoff,
    commands::{ControlClock, Runner},
    connect,
    identity::Identity,
    metrics::Metrics,
    outbox::{Outbox, delivery::Delivery},
};

/// How long the control plane has to answer Hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat cadence when the control plane names none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// How often fail2ban is asked for its version, jails and their counters. Heartbeats carry
/// the last answer: a fail2ban that hangs never delays a heartbeat (the
/// control plane cuts an agent silent for a few seconds).
const STATE_REFRESH: Duration = Duration::from_secs(10);
/// How long the first Hello waits for fail2ban's first answer.
const FIRST_STATE_WAIT: Duration = Duration::from_secs(3);

/// Why the agent stopped holding its stream.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    /// The control plane refused the credential (revoked, or not this host's).
    #[error("the control plane refused this host's credential: {0}")]
    Refused(String),
    /// The control plane does not speak this agent's version.
    #[error("the control plane does not accept this agent: {0}")]
    Incompatible(String),
}

/// What fail2ban says about itself, for Hello and Heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fail2banState {
    version: String,
    jails: Vec<String>,
    /// Each jail's counters, by name.
    states: Vec<JailState>,
    /// When it was read (Unix ms, this host's clock; 0: never).
    read_at_ms: i64,
}

impl Fail2banState {
    /// Read now; fail2ban down reads as no version and no jails.
    async fn read(fail2ban: &Fail2ban) -> Self {
        let read_at_ms = chrono::Utc::now().timestamp_millis();
        let Ok(status) = fail2ban.server_status().await else {
            return Self { read_at_ms, ..Self::default() };
        };
        let mut states: Vec<JailState> = status
            .jails
            .into_iter()
            .map(|jail| JailState {
                name: jail.name,
                currently_failed: jail.currently_failed,
                total_failed: jail.total_failed,
                currently_banned: jail.currently_banned,
                total_banned: jail.total_banned,
            })
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        let jails = states.iter().map(|state| state.name.clone()).collect();
        Self { version: status.version, jails, states, read_at_ms }
    }

    /// Reads fail2ban every [`STATE_REFRESH`] into a watch until `stop`.
    fn watch(fail2ban: Fail2ban, stop: CancellationToken) -> watch::Receiver<Option<Self>> {
        let (sender, receiver) = watch::channel(None);
        tokio::spawn(async move {
            loop {
                let state = tokio::select! {
                    () = stop.cancelled() => return,
                    state = Self::read(&fail2ban) => state,
                };
                sender.send_replace(Some(state));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(STATE_REFRESH) => {}
                }
            }
        });
        receiver
    }
}

impl Fail2banState {
    /// How long ago it was read (0 before the first read).
    fn age_ms(&self) -> u64 {
        if self.read_at_ms == 0 {
            return 0;
        }
        u64::try_from(chrono::Utc::now().timestamp_millis().saturating_sub(self.read_at_ms)).unwrap_or(0)
    }
}

/// The last state read (empty before the first answer).
fn current(state: &watch::Receiver<Option<Fail2banState>>) -> Fail2banState {
    state.borrow().clone().unwrap_or_default()
}

/// Holds the stream until `stop`; `Err` only when retrying cannot help.
pub async fn run(
    config: &Config,
    identity: &Identity,
    fail2ban: &Fail2ban,
    outbox: &Outbox,
    metrics: &Metrics,
    stop: CancellationToken,
) -> Result<(), SessionEnd> {
    let mut state = Fail2banState::watch(fail2ban.clone(), stop.child_token());
    // The first Hello names fail2ban's jails when it answers soon.
    let _ = tokio::time::timeout(FIRST_STATE_WAIT, state.wait_for(Option::is_some)).await;
    let session =
        Session { config, identity, fail2ban, outbox, metrics, instance: uuid::Uuid::new_v4().to_string(), state };
    let mut backoff = Backoff::new(config.reconnect_max);
    let mut endpoints = config.control_endpoint.iter().cycle();
    loop {
        let Some(endpoint) = endpoints.next() else { return Ok(()) };
        let attempt = session.attach(endpoint, &stop);
        // SIGTERM while connecting or waiting for Welcome ends at once.
        let outcome = tokio::select! {
            () = stop.cancelled() => Ok(Attached::Stopped),
            outcome = attempt => outcome,
        };
        metrics.set_connected(false);
        match outcome {
            Ok(Attached::Stopped) => return Ok(()),
            Ok(Attached::Ended { after_welcome }) => {
                if after_welcome {
                    backoff.reset();
                }
                tracing::info!(%endpoint, "stream to the control plane ended; attaching again");
            }
            Err(status) => match status.code() {
                Code::Unauthenticated | Code::PermissionDenied => {
                    metrics.attach_attempt("refused");
                    return Err(SessionEnd::Refused(status.message().to_owned()));
                }
                Code::FailedPrecondition => {
                    metrics.attach_attempt("refused");
                    return Err(SessionEnd::Incompatible(status.message().to_owned()));
                }
                code => {
                    metrics.attach_attempt("unreachable");
                    tracing::warn!(%endpoint, ?code, reason = %status.message(), "cannot attach to the control plane");
                }
            },
        }
        let wait = backoff.next_delay();
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How an attempt that was not refused ended.
enum Attached {
    Stopped,
    Ended { after_welcome: bool },
}

/// What every attempt needs.
struct Session<'a> {
    config: &'a Config,
    identity: &'a Identity,
    fail2ban: &'a Fail2ban,
    /// The host's history events, delivered after Welcome.
    outbox: &'a Outbox,
    metrics: &'a Metrics,
    /// This agent process (see `Hello.instance`).
    instance: String,
    state: watch::Receiver<Option<Fail2banState>>,
}

impl Session<'_> {
    /// One attempt at `endpoint`.
    async fn attach(&self, endpoint: &str, stop: &CancellationToken) -> Result<Attached, Status> {
        let Self { config, identity, fail2ban, outbox, metrics, instance, state } = self;
        let channel = connect::channel(config, endpoint)
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach {endpoint}: {e:#}")))?;
        let mut client = AgentServiceClient::new(channel).max_decoding_message_size(connect::MAX_MESSAGE_BYTES);
        let (sender, receiver) = mpsc::channel::<AttachRequest>(8);
        let said = current(state);
        let hello = Hello {
            host_id: identity.host_id.clone(),
            agent_version: crate::VERSION.to_owned(),
            instance: instance.to_owned(),
            states_age_ms: said.age_ms(),
            fail2ban_version: said.version,
            jails: said.jails,
            jail_states: said.states,
        };
        send(&sender, attach_request::Body::Hello(hello)).await?;
        let mut request = Request::new(ReceiverStream::new(receiver));
        let bearer = MetadataValue::try_from(format!("Bearer {}", identity.credential))
            .map_err(|_| Status::unauthenticated("the saved credential is not a header value"))?;
        request.metadata_mut().insert("authorization", bearer);
        let mut replies = client.attach(request).await?.into_inner();
        let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, replies.message()).await {
            Ok(Ok(Some(AttachResponse { body: Some(attach_response::Body::Welcome(welcome)) }))) => welcome,
            Ok(Ok(_)) => return Ok(Attached::Ended { after_welcome: false }),
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Welcome within 10 s")),
        };
        let Welcome { host_name, replica, control_version, heartbeat_seconds, control_unix_ms, last_sequence } =
            welcome;
        let mut delivery = Delivery::start(outbox, last_sequence)
            .await
            .map_err(|e| Status::unavailable(format!("the outbox cannot be read: {e}")))?;
        let runner = Runner::new(
            (*fail2ban).clone(),
            ControlClock::from_welcome(control_unix_ms),
            (*metrics).clone(),
            sender.clone(),
        );
        metrics.attach_attempt("attached");
        metrics.set_connected(true);
        tracing::info!(%endpoint, %replica, %host_name, %control_version, "attached to the control plane");
        let cadence =
            if heartbeat_seconds == 0 { DEFAULT_HEARTBEAT } else { Duration::from_secs(heartbeat_seconds.into()) };
        let mut beat = tokio::time::interval(cadence);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(Attached::Stopped),
                _ = beat.tick() => {
                    let said = current(state);
                    let heartbeat = Heartbeat {
                        states_age_ms: said.age_ms(),
                        fail2ban_version: said.version,
                        jails: said.jails,
                        jail_states: said.states,
                        outbox_backlog: metrics.outbox_backlog(),
                    };
                    if send(&sender, attach_request::Body::Heartbeat(heartbeat)).await.is_err() {
                        return Ok(Attached::Ended { after_welcome: true });
                    }
                }
                () = delivery.ready() => match delivery.next_batch().await {
                    Ok(Some(batch)) => {
                        if send(&sender, attach_request::Body::Events(batch)).await.is_err() {
                            return Ok(Attached::Ended { after_welcome: true });
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, "the outbox cannot be read; attaching again");
                        return Ok(Attached::Ended { after_welcome: true });
                    }
                },
                reply = replies.message() => match reply {
                    Ok(Some(AttachResponse { body: Some(attach_response::Body::Command(command)) })) => runner.start(command),
                    Ok(Some(AttachResponse { body: Some(attach_response::Body::Ack(ack)) })) => {
                        if let Err(error) = delivery.acknowledged(ack.through).await {
                            tracing::error!(%error, "the outbox cannot be written; attaching again");
                            return Ok(Attached::Ended { after_welcome: true });
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(Attached::Ended { after_welcome: true }),
                    Err(status) if matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied) => {
                        return Err(status);
                    }
                    Err(status) => {
                        tracing::info!(%endpoint, code = ?status.code(), reason = %status.message(), "stream closed");
                        return Ok(Attached::Ended { after_welcome: true });
                    }
                },
            }
        }
    }
}

async fn send(sender: &mpsc::Sender<AttachRequest>, body: attach_request::Body) -> Result<(), Status> {
    sender.send(AttachRequest { body: Some(body) }).await.map_err(|_| Status::unavailable("the stream is closed"))
}
