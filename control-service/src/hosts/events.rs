//! A host's history events, delivered from its agent's durable outbox over
//! its Attach stream, stored in the archive once each.
//!
//! * Welcome carries the host's delivery cursor (the last sequence stored,
//!   [`HostEvents::cursor`]): the agent sends from the next one.
//! * Each `Events` batch is checked ([`check`]: consecutive sequences,
//!   bounded fields), placed through the geo-service like the local sync's
//!   rows (geo-service down: archived without a country, back-filled
//!   later), and stored with the cursor in one transaction
//!   (`HistoryStore::store_events`): events at or below the cursor are
//!   skipped (a resent batch is stored once), a batch that would leave a
//!   gap is refused (FAILED_PRECONDITION: the stream ends and the agent
//!   resends from the cursor), and only the stream holding the host's lease
//!   stores (a stream taken over is ABORTED). Then an `Ack`.
//! * Bounded: a stream's batches wait in a channel of [`QUEUED_BATCHES`]
//!   (an agent keeps at most 4 unacknowledged); one more is
//!   RESOURCE_EXHAUSTED. One worker per stream stores them in order, so
//!   the stream's loop never waits on the database or the geo-service.
//! * Bounded across streams: every batch waiting on this replica holds its
//!   encoded size from a budget of [`QUEUED_BYTES`] (a batch may be up to a
//!   MiB, and there may be 2 000 streams). A batch that finds the budget
//!   spent waits for it (that stream stops reading, so HTTP/2 flow control
//!   holds its agent back) for at most [`BUDGET_WAIT`], then its stream
//!   ends RESOURCE_EXHAUSTED and the agent attaches again later.

use std::sync::Arc;

use bangui_fail2ban::history::{MAX_MATCH_CHARS, MAX_MATCHES, Unreadable};
use bangui_proto::agent::v1::{self as pb, AttachResponse, attach_response::Body as Outbound};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::Status;

use crate::{
    error::{InvalidArgument, StoreError},
    history::History,
    kinds::{Event, Origin},
    store::{
        HistoryStore,
        history::{ArchivedBan, EventBatch, EventsStored},
    },
};

/// Events in one batch, at most.
pub const MAX_EVENTS: usize = 500;
/// Bytes of an event's jail or address, at most.
pub const MAX_FIELD_BYTES: usize = 255;
/// Batches of one stream waiting to be stored, at most.
pub const QUEUED_BATCHES: usize = 5;
/// Bytes of batches (encoded) waiting to be stored on one replica, at most.
pub const QUEUED_BYTES: usize = 16 << 20;
/// How long a batch waits for room in [`QUEUED_BYTES`]: less than a
/// stream's lease goes stale without a refresh (15 s), which its loop does
/// not do while it waits.
pub const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What storing a batch came to, as the stream ends with it.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error("the batch starts at sequence {first}, after {cursor} + 1 stored: resend from {next}", next = cursor + 1)]
    Gap { first: i64, cursor: i64 },
    #[error("this stream no longer holds host {0}'s lease")]
    NotHolder(String),
    #[error("more than {QUEUED_BATCHES} batches unacknowledged")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<EventsError> for Status {
    fn from(error: EventsError) -> Self {
        match error {
            EventsError::Invalid(e) => crate::api::invalid(e),
            e @ EventsError::Gap { .. } => Status::failed_precondition(e.to_string()),
            e @ EventsError::NotHolder(_) => Status::aborted(e.to_string()),
            e @ EventsError::TooMany => Status::resource_exhausted(e.to_string()),
            EventsError::Store(e) => crate::api::store_unavailable(&e),
        }
    }
}

/// Storing hosts' events.
#[derive(Debug, Clone)]
pub struct HostEvents {
    history: History,
    store: Arc<dyn HistoryStore>,
    /// [`QUEUED_BYTES`], in KiB permits.
    budget: Arc<Semaphore>,
}

/// KiB permits of [`QUEUED_BYTES`].
const BUDGET_KIB: usize = QUEUED_BYTES >> 10;

/// A batch checked: its first sequence and one row per event.
#[derive(Debug)]
pub struct Checked {
    pub first: i64,
    pub rows: Vec<ArchivedBan>,
}

fn bounded(field: &'static str, text: &str) -> Result<(), InvalidArgument> {
    if text.len() > MAX_FIELD_BYTES {
        return Err(InvalidArgument::new(field, format!("at most {MAX_FIELD_BYTES} bytes")));
    }
    Ok(())
}

/// Checks `events` of `host` and makes them archive rows (at `now`).
pub fn check(host: &str, events: Vec<pb::Event>, now: i64) -> Result<Checked, InvalidArgument> {
    if events.is_empty() {
        return Err(InvalidArgument::new("events.events", "an Events batch has at least one event"));
    }
    if events.len() > MAX_EVENTS {
        return Err(InvalidArgument::new("events.events", format!("at most {MAX_EVENTS} events a batch")));
    }
    let first = events[0].sequence;
    if first == 0 || first > i64::MAX as u64 / 2 {
        return Err(InvalidArgument::new("events.events.sequence", "sequences start at 1"));
    }
    let mut rows = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        if event.sequence != first + i as u64 {
            return Err(InvalidArgument::new("events.events.sequence", "the sequences of a batch are consecutive"));
        }
        bounded("events.events.jail", &event.jail)?;
        bounded("events.events.ip", &event.ip)?;
        if event.jail.is_empty() || event.ip.is_empty() {
            return Err(InvalidArgument::new("events.events.jail", "an event names its jail and address"));
        }
        if event.matches.len() > MAX_MATCHES || event.matches.iter().any(|m| m.chars().count() > MAX_MATCH_CHARS) {
            return Err(InvalidArgument::new(
                "events.events.matches",
                format!("at most {MAX_MATCHES} lines of {MAX_MATCH_CHARS} characters"),
            ));
        }
        if !event.unreadable.is_empty() && Unreadable::from_label(&event.unreadable).is_none() {
            return Err(InvalidArgument::new("events.events.unreadable", "not_utf8, not_json, too_large or empty"));
        }
        rows.push(ArchivedBan {
            id: 0,
            host: host.to_owned(),
            jail: event.jail,
            ip: event.ip,
            banned_at: event.banned_at,
            ban_seconds: event.ban_seconds,
            ban_count: event.ban_count,
            origin: Origin::Fail2ban,
            event: Event::Ban,
            failures: event.failures,
            matches: serde_json::to_string(&event.matches).unwrap_or_else(|_| "[]".into()),
            country_code: None,
            country_name: None,
            asn: None,
            as_org: None,
            archived_at: now,
            source: None,
        });
    }
    Ok(Checked { first: i64::try_from(first).unwrap_or(i64::MAX), rows })
}

impl HostEvents {
    pub fn new(history: History) -> Self {
        let store = history.store().clone();
        Self { history, store, budget: Arc::new(Semaphore::new(BUDGET_KIB)) }
    }

    /// The last sequence stored for `host` (0: none).
    pub async fn cursor(&self, host: &str) -> Result<u64, StoreError> {
        Ok(u64::try_from(self.store.event_cursor(host).await?).unwrap_or(0))
    }

    /// Stores one batch of `host`'s events delivered on stream
    /// `stream_id`; returns the sequence stored through.
    pub async fn store(&self, host: &str, stream_id: &str, events: Vec<pb::Event>) -> Result<u64, EventsError> {
        let now = self.history.now();
        let unreadable: Vec<&'static str> =
            events.iter().filter_map(|e| Unreadable::from_label(&e.unreadable)).map(Unreadable::label).collect();
        let Checked { first, mut rows } = check(host, events, now)?;
        // Bans made through this service on the host were archived at once
        // (origin manual or blocklist): not again. Their sequences still count.
        let mut keep = rows.clone();
        crate::history::drop_own_bans(self.store.as_ref(), host, &mut keep).await?;
        let mut kept = vec![false; rows.len()];
        if keep.len() == rows.len() {
            kept.fill(true);
        } else {
            let mut wanted = keep.iter().peekable();
            for (slot, row) in kept.iter_mut().zip(&rows) {
                if wanted.peek().is_some_and(|w| *w == row) {
                    *slot = true;
                    wanted.next();
                }
            }
        }
        drop(keep);
        self.history.place(&mut rows).await;
        let batch = EventBatch {
            host: host.to_owned(),
            stream_id: stream_id.to_owned(),
            first,
            rows: rows.into_iter().zip(kept).map(|(row, kept)| kept.then_some(row)).collect(),
            at: now,
        };
        match self.store.store_events(&batch).await? {
            EventsStored::Stored { through, added } => {
                for reason in unreadable {
                    self.history.unreadable_row(reason);
                }
                tracing::debug!(host, first, through, added, "host events stored");
                Ok(u64::try_from(through).unwrap_or(0))
            }
            EventsStored::Gap { cursor } => Err(EventsError::Gap { first, cursor }),
            EventsStored::NotHolder => Err(EventsError::NotHolder(host.to_owned())),
        }
    }

    /// The intake of one stream: a worker that stores its batches in
    /// order and answers each with an Ack on `replies`.
    pub fn intake(&self, host: &str, stream_id: &str, replies: mpsc::Sender<Result<AttachResponse, Status>>) -> Intake {
        let (batches, mut queue) = mpsc::channel::<(Vec<pb::Event>, OwnedSemaphorePermit)>(QUEUED_BATCHES);
        let (failed, failure) = oneshot::channel();
        let (events, host, stream_id) = (self.clone(), host.to_owned(), stream_id.to_owned());
        tokio::spawn(async move {
            // Each batch's share of the budget goes when it is stored.
            while let Some((batch, _share)) = queue.recv().await {
                match events.store(&host, &stream_id, batch).await {
                    Ok(through) => {
                        let ack = AttachResponse { body: Some(Outbound::Ack(pb::Ack { through })) };
                        if replies.send(Ok(ack)).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, host, "host events refused: the stream ends");
                        let _ = failed.send(Status::from(error));
                        return;
                    }
                }
            }
        });
        Intake { batches, failure, budget: self.budget.clone() }
    }
}

/// One stream's way in for events (see [`HostEvents::intake`]).
#[derive(Debug)]
pub struct Intake {
    batches: mpsc::Sender<(Vec<pb::Event>, OwnedSemaphorePermit)>,
    failure: oneshot::Receiver<Status>,
    budget: Arc<Semaphore>,
}

impl Intake {
    /// Queues a batch for storing once it has its share of the replica's
    /// budget, or refuses it when the agent has more unacknowledged than it
    /// may, or the budget stays spent for [`BUDGET_WAIT`].
    pub async fn offer(&self, events: pb::Events) -> Result<(), Status> {
        let share = reserve(&self.budget, &events).await?;
        self.batches.try_send((events.events, share)).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => EventsError::TooMany.into(),
            mpsc::error::TrySendError::Closed(_) => Status::aborted("the stream's event intake ended"),
        })
    }

    /// Resolves when a batch was refused: the status the stream ends with.
    pub async fn failed(&mut self) -> Status {
        match (&mut self.failure).await {
            Ok(status) => status,
            // The worker ended without a failure: never resolves.
            Err(_) => std::future::pending().await,
        }
    }
}

/// `events`' share of `budget` (KiB permits), waited for at most
/// [`BUDGET_WAIT`].
async fn reserve(budget: &Arc<Semaphore>, events: &pb::Events) -> Result<OwnedSemaphorePermit, Status> {
    let kib = (prost::Message::encoded_len(events) >> 10) + 1;
    let kib = u32::try_from(kib.min(BUDGET_KIB)).unwrap_or(u32::MAX);
    match tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(kib)).await {
        Ok(Ok(share)) => Ok(share),
        _ => Err(Status::resource_exhausted(format!(
            "this replica holds {} MiB of host events waiting to be stored: attach again later",
            QUEUED_BYTES >> 20
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn batches_waiting_share_one_budget() {
        let budget = Arc::new(Semaphore::new(BUDGET_KIB));
        // A batch of 1 MiB of log lines (what the decode limit lets through).
        let big = pb::Events {
            events: (1..=100).map(|n| pb::Event { matches: vec!["x".repeat(500); 20], ..event(n) }).collect(),
        };
        let kib = prost::Message::encoded_len(&big) >> 10;
        assert!(kib > 900, "{kib} KiB");
        let mut held = Vec::new();
        while budget.available_permits() > kib + 1 {
            held.push(reserve(&budget, &big).await.unwrap());
        }
        assert_eq!(held.len(), QUEUED_BYTES / ((kib + 1) << 10), "16 MiB hold 16 such batches");
        let refused = reserve(&budget, &big).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "after {BUDGET_WAIT:?}");
        // A batch stored gives its share back: the next one fits.
        held.pop();
        assert!(reserve(&budget, &big).await.is_ok());
    }

    fn event(sequence: u64) -> pb::Event {
        pb::Event {
            sequence,
            jail: "sshd".into(),
            ip: "192.0.2.1".into(),
            banned_at: 1000,
            ban_seconds: 600,
            ban_count: 1,
            failures: 3,
            matches: vec!["line".into()],
            unreadable: String::new(),
        }
    }

    #[test]
    fn a_batch_is_consecutive_and_bounded() {
        let ok = check("h", vec![event(7), event(8)], 1).unwrap();
        assert_eq!((ok.first, ok.rows.len(), ok.rows[0].host.as_str()), (7, 2, "h"));
        let field = |events: Vec<pb::Event>| check("h", events, 1).unwrap_err().field;
        assert_eq!(field(vec![]), "events.events");
        assert_eq!(field(vec![event(7), event(9)]), "events.events.sequence");
        assert_eq!(field(vec![event(0)]), "events.events.sequence");
        assert_eq!(field((1..=501).map(event).collect()), "events.events");
        assert_eq!(field(vec![pb::Event { jail: "j".repeat(256), ..event(1) }]), "events.events.jail");
        assert_eq!(field(vec![pb::Event { ip: String::new(), ..event(1) }]), "events.events.jail");
        assert_eq!(field(vec![pb::Event { matches: vec!["x".into(); 21], ..event(1) }]), "events.events.matches");
        assert_eq!(field(vec![pb::Event { matches: vec!["x".repeat(501)], ..event(1) }]), "events.events.matches");
        assert_eq!(field(vec![pb::Event { unreadable: "weird".into(), ..event(1) }]), "events.events.unreadable");
        assert!(check("h", (1..=500).map(event).collect(), 1).is_ok());
    }
}
