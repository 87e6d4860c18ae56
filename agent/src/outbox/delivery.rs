//! Delivery of the outbox over one attached stream: from the sequence after
//! Welcome's `last_sequence`, in batches of at most
//! [`MAX_BATCH_EVENTS`](super::MAX_BATCH_EVENTS) events and
//! [`MAX_BATCH_BYTES`](super::MAX_BATCH_BYTES), with at most [`WINDOW`]
//! batches unacknowledged. An Ack deletes what it covers. A stream that
//! ends forgets its batches in flight: the next Welcome says where the
//! control plane stands, and delivery starts again from there.

use std::collections::VecDeque;

use bangui_proto::agent::v1 as pb;
use tokio::sync::watch;

use super::{Outbox, OutboxError};

/// Batches sent and not acknowledged, at most (the control plane queues up
/// to 5 per stream).
pub const WINDOW: usize = 4;

/// Delivery on one stream.
#[derive(Debug)]
pub struct Delivery {
    outbox: Outbox,
    written: watch::Receiver<u64>,
    /// The next sequence to send.
    next: u64,
    /// The last sequence of each batch in flight, oldest first.
    in_flight: VecDeque<u64>,
}

impl Delivery {
    /// Starts after the control plane said it stored everything through
    /// `stored`.
    pub async fn start(outbox: &Outbox, stored: u64) -> Result<Self, OutboxError> {
        outbox.resume(stored).await?;
        Ok(Self { outbox: outbox.clone(), written: outbox.written(), next: stored + 1, in_flight: VecDeque::new() })
    }

    /// Resolves when a batch may be sent: events are waiting and the window
    /// has room. Cancel-safe (it only waits).
    pub async fn ready(&mut self) {
        loop {
            if self.in_flight.len() < WINDOW && *self.written.borrow_and_update() >= self.next {
                return;
            }
            if self.in_flight.len() >= WINDOW || self.written.changed().await.is_err() {
                // Waits for an Ack (another branch), or forever once the
                // sync has stopped.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The next batch to send (after [`Delivery::ready`]); `None` when
    /// nothing is waiting after all.
    pub async fn next_batch(&mut self) -> Result<Option<pb::Events>, OutboxError> {
        let events = self.outbox.batch(self.next).await?;
        let Some(last) = events.last().map(|e| e.sequence) else { return Ok(None) };
        self.next = last + 1;
        self.in_flight.push_back(last);
        Ok(Some(pb::Events { events }))
    }

    /// The control plane stored everything through `through`.
    pub async fn acknowledged(&mut self, through: u64) -> Result<(), OutboxError> {
        self.outbox.acknowledge(through).await?;
        while self.in_flight.front().is_some_and(|last| *last <= through) {
            self.in_flight.pop_front();
        }
        Ok(())
    }

    /// Batches in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}
