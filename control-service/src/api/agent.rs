//! `bangui.agent.v1.AgentService`, on the agent port (`--agent-listen`),
//! outside the session gate: Enroll is authenticated by its token, Attach
//! by the host credential in `authorization: Bearer …`.
//!
//! Attach reads the Hello (within [`HELLO_TIMEOUT`]) before it answers, so
//! every refusal is the call's status; then a task keeps the stream: it
//! refreshes the host's lease every heartbeat, ends the stream when the
//! host is revoked or the agent falls silent, and releases the lease.
//!
//! When the replica shuts down, a stream sends no more commands and ends
//! once the commands already sent down it are answered (at most
//! [`DRAIN`]): their callers get the host's answer, not UNAVAILABLE for a
//! command that ran. Commands still queued were never sent; their callers
//! send them to the host's next stream (`hosts::commands`).

use std::{collections::HashSet, pin::Pin, time::Duration};

use bangui_proto::agent::v1::{
    AttachRequest, AttachResponse, Command, EnrollRequest, EnrollResponse, Welcome, agent_service_server::AgentService,
    attach_request::Body as Inbound, attach_response::Body as Outbound,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::hosts::{
    Announcement, HEARTBEAT, Hello, HostError, HostId, HostName, Hosts, JailState, LiveStream,
    events::{HostEvents, Intake},
    name, version,
};

/// How long an Attach may take to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// An agent silent this long (no heartbeat) is cut.
pub const SILENCE: Duration = Duration::from_secs(5);
/// A stream of a replica shutting down waits this long, at most, for the
/// results of the commands already sent down it (the agent is then on
/// another replica within 2 s).
pub const DRAIN: Duration = Duration::from_secs(1);

/// Messages queued toward one agent (the Welcome, commands).
const OUTBOUND: usize = 16;

/// Enroll calls handled at once; one more is RESOURCE_EXHAUSTED at once
/// (anybody can call Enroll: a flood of wrong tokens must not queue up
/// database work).
pub const ENROLLS_AT_ONCE: usize = 8;

/// The AgentService handlers.
#[derive(Debug, Clone)]
pub struct AgentApi {
    hosts: Hosts,
    enrolls: std::sync::Arc<tokio::sync::Semaphore>,
    /// Cancelled when the replica shuts down: every stream ends.
    stopping: CancellationToken,
    /// Stores the events agents deliver (none: Events are refused).
    events: Option<HostEvents>,
}

impl AgentApi {
    pub fn new(hosts: Hosts, stopping: CancellationToken) -> Self {
        Self {
            hosts,
            enrolls: std::sync::Arc::new(tokio::sync::Semaphore::new(ENROLLS_AT_ONCE)),
            stopping,
            events: None,
        }
    }

    /// Stores the hosts' outbox events with `events`.
    #[must_use]
    pub fn with_events(mut self, events: HostEvents) -> Self {
        self.events = Some(events);
        self
    }
}

/// The credential of `authorization: Bearer <credential>`.
fn bearer<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|credential| credential.trim().to_owned())
        .ok_or_else(|| Status::unauthenticated("Attach needs `authorization: Bearer <host credential>`"))
}

impl TryFrom<bangui_proto::agent::v1::Hello> for Hello {
    type Error = Status;

    fn try_from(hello: bangui_proto::agent::v1::Hello) -> Result<Self, Status> {
        let host_id = HostId::parse("hello.host_id", &hello.host_id).map_err(super::invalid)?;
        name::bounded("hello.agent_version", &hello.agent_version).map_err(super::invalid)?;
        name::bounded("hello.instance", &hello.instance).map_err(super::invalid)?;
        if hello.instance.is_empty() {
            return Err(super::invalid(crate::error::InvalidArgument::new("hello.instance", "required")));
        }
        let announcement =
            Announcement::parse(("hello.fail2ban_version", "hello.jails"), &hello.fail2ban_version, &hello.jails)
                .and_then(|said| {
                    said.with_states("hello.jail_states", states(hello.jail_states), hello.states_age_ms, 0)
                })
                .map_err(super::invalid)?;
        Ok(Self { host_id, agent_version: hello.agent_version, instance: hello.instance, announcement })
    }
}

/// The jails' counters an agent pushed.
fn states(pushed: Vec<bangui_proto::agent::v1::JailState>) -> Vec<JailState> {
    pushed
        .into_iter()
        .map(|s| JailState {
            name: s.name,
            currently_failed: s.currently_failed,
            total_failed: s.total_failed,
            currently_banned: s.currently_banned,
            total_banned: s.total_banned,
        })
        .collect()
}

/// The first message, which must be a Hello, within [`HELLO_TIMEOUT`].
async fn read_hello(inbound: &mut Streaming<AttachRequest>) -> Result<Hello, Status> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded(format!("no Hello within {HELLO_TIMEOUT:?}")))??;
    match first.and_then(|m| m.body) {
        Some(Inbound::Hello(hello)) => hello.try_into(),
        _ => Err(Status::invalid_argument("the first message of Attach must be a Hello")),
    }
}

/// Keeps an attached stream until it ends; returns the status it ends
/// with (`None`: the agent closed it). Commands from this replica's callers
/// go down `outbound`; their results come up `inbound`.
async fn keep(
    hosts: &Hosts,
    live: &mut LiveStream,
    commands: &mut mpsc::Receiver<Command>,
    mut inbound: Streaming<AttachRequest>,
    outbound: &mpsc::Sender<Result<AttachResponse, Status>>,
    stopping: &CancellationToken,
    mut events: Option<Intake>,
) -> Option<Status> {
    let shutting_down = || Some(Status::unavailable("this replica is shutting down: attach to another"));
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut heard = tokio::time::Instant::now();
    // Commands sent down whose callers still wait for the result.
    let mut sent: HashSet<String> = HashSet::new();
    // Shutting down: until when the results of `sent` are waited for.
    let mut draining: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    loop {
        tokio::select! {
            () = live.cancelled() => return Some(live.why_cut().await.into()),
            () = stopping.cancelled(), if draining.is_none() => {
                sent.retain(|id| hosts.command_awaited(id));
                if sent.is_empty() {
                    return shutting_down();
                }
                draining = Some(tokio::time::Instant::now() + DRAIN);
            }
            () = tokio::time::sleep_until(draining.unwrap_or(far)), if draining.is_some() => return shutting_down(),
            Some(command) = commands.recv(), if draining.is_none() => {
                let id = command.id.clone();
                if outbound.send(Ok(AttachResponse { body: Some(Outbound::Command(command)) })).await.is_err() {
                    return None;
                }
                sent.insert(id);
            }
            Some(refused) = async { Some(events.as_mut()?.failed().await) } => return Some(refused),
            _ = ticks.tick() => {
                // Callers that gave up need no result.
                sent.retain(|id| hosts.command_awaited(id));
                if heard.elapsed() > SILENCE {
                    return Some(Status::deadline_exceeded(format!("no heartbeat within {SILENCE:?}")));
                }
                if let Err(error) = live.refresh().await {
                    return Some(error.into());
                }
            }
            message = inbound.message() => match message {
                Ok(Some(AttachRequest { body: Some(Inbound::Heartbeat(beat)) })) => {
                    let said = Announcement::parse(
                        ("heartbeat.fail2ban_version", "heartbeat.jails"),
                        &beat.fail2ban_version,
                        &beat.jails,
                    )
                    .and_then(|said| {
                        let counters = states(beat.jail_states);
                        said.with_states("heartbeat.jail_states", counters, beat.states_age_ms, beat.outbox_backlog)
                    });
                    match said {
                        Ok(said) => live.record(said),
                        Err(invalid) => return Some(super::invalid(invalid)),
                    }
                    heard = tokio::time::Instant::now();
                }
                Ok(Some(AttachRequest { body: Some(Inbound::Result(result)) })) => {
                    sent.remove(&result.id);
                    hosts.command_answered(result);
                    if draining.is_some() && sent.is_empty() {
                        return shutting_down();
                    }
                }
                Ok(Some(AttachRequest { body: Some(Inbound::Events(batch)) })) => {
                    let Some(intake) = &events else {
                        return Some(Status::failed_precondition("this replica stores no host events"));
                    };
                    if let Err(refused) = intake.offer(batch).await {
                        return Some(refused);
                    }
                    heard = tokio::time::Instant::now();
                }
                Ok(Some(_)) => {
                    return Some(Status::invalid_argument(
                        "after the Hello only Heartbeats, CommandResults and Events are sent",
                    ));
                }
                Ok(None) | Err(_) => return None,
            },
        }
    }
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<AttachResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    #[instrument(skip_all, fields(host_id = %request.get_ref().host_id))]
    async fn enroll(&self, request: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let _turn = self.enrolls.try_acquire().map_err(|_| {
            Status::resource_exhausted(format!("more than {ENROLLS_AT_ONCE} enrollments at once: try again"))
        })?;
        let request = request.into_inner();
        let id = HostId::parse("host_id", &request.host_id).map_err(super::invalid)?;
        let name = HostName::parse("host_name", &request.host_name).map_err(super::invalid)?;
        let enrolled = self.hosts.enroll(&request.token, &id, &name).await?;
        Ok(Response::new(EnrollResponse {
            host_id: enrolled.host.id,
            credential: enrolled.credential,
            host_name: enrolled.host.name,
        }))
    }

    type AttachStream = AttachStream;

    #[instrument(skip_all)]
    async fn attach(&self, request: Request<Streaming<AttachRequest>>) -> Result<Response<AttachStream>, Status> {
        let permit = self.hosts.stream_permit()?;
        let credential = bearer(&request)?;
        let mut inbound = request.into_inner();
        let hello = read_hello(&mut inbound).await?;
        let mut live = self.hosts.attach(permit, &credential, hello).await?;
        let last_sequence = match &self.events {
            Some(events) => match events.cursor(live.host_id()).await {
                Ok(cursor) => cursor,
                Err(error) => {
                    live.close().await;
                    return Err(crate::api::store_unavailable(&error));
                }
            },
            None => 0,
        };
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let events = self.events.as_ref().map(|events| events.intake(live.host_id(), live.stream_id(), tx.clone()));
        let welcome = Welcome {
            host_name: live.host_name().to_owned(),
            replica: self.hosts.replica().to_owned(),
            control_version: version::CONTROL_VERSION.to_owned(),
            heartbeat_seconds: u32::try_from(HEARTBEAT.as_secs()).unwrap_or(1),
            control_unix_ms: chrono::Utc::now().timestamp_millis(),
            last_sequence,
        };
        // The channel is empty: this send cannot wait.
        let _ = tx.send(Ok(AttachResponse { body: Some(Outbound::Welcome(welcome)) })).await;
        let stopping = self.stopping.clone();
        let hosts = self.hosts.clone();
        let mut commands = live.take_commands();
        tokio::spawn(async move {
            let ended = match commands.as_mut() {
                Some(commands) => tokio::select! {
                    ended = keep(&hosts, &mut live, commands, inbound, &tx, &stopping, events) => ended,
                    // The agent went away: nobody reads the answer.
                    () = tx.closed() => None,
                },
                None => None,
            };
            if let Some(commands) = commands.as_mut() {
                hosts.commands_not_sent(commands);
            }
            live.close().await;
            if let Some(status) = ended {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl From<HostError> for Status {
    fn from(error: HostError) -> Self {
        match error {
            HostError::Invalid(e) => super::invalid(e),
            e @ HostError::NotFound(_) => Status::not_found(e.to_string()),
            e @ (HostError::NameTaken(_) | HostError::IdTaken(_) | HostError::AlreadyConnected(_)) => {
                Status::already_exists(e.to_string())
            }
            e @ (HostError::TokenRefused | HostError::Unauthenticated(_)) => Status::unauthenticated(e.to_string()),
            e @ HostError::Version { .. } => Status::failed_precondition(e.to_string()),
            e @ HostError::TooManyStreams(_) => Status::resource_exhausted(e.to_string()),
            e @ HostError::LeaseLost(_) => Status::aborted(e.to_string()),
            HostError::Store(e) => super::store_unavailable(&e),
        }
    }
}
