//! The live agent streams on this replica: host id → the stream's id, a
//! cancellation token and the way down the stream for commands. Revoking a host, or its own
//! agent reconnecting here, cancels the old stream at once; the database
//! lease (`store::hosts`) is what makes a stream the host's only one
//! across replicas, this map only lets this replica reach its own.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use bangui_proto::agent::v1::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Entry {
    stream_id: String,
    cancel: CancellationToken,
    commands: mpsc::Sender<Command>,
}

/// The live streams of this replica.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    streams: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Registry {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        f(&mut self.streams.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records `stream_id` as `host`'s stream; a stream it replaces (the
    /// same agent reconnecting) is cancelled.
    pub fn insert(&self, host: &str, stream_id: &str, cancel: CancellationToken, commands: mpsc::Sender<Command>) {
        let entry = Entry { stream_id: stream_id.to_owned(), cancel, commands };
        let old = self.with(|streams| streams.insert(host.to_owned(), entry));
        if let Some(old) = old {
            old.cancel.cancel();
        }
    }

    /// Forgets `host`'s stream if it is still `stream_id`.
    pub fn remove(&self, host: &str, stream_id: &str) {
        self.with(|streams| {
            if streams.get(host).is_some_and(|e| e.stream_id == stream_id) {
                streams.remove(host);
            }
        });
    }

    /// Cancels `host`'s stream here, if there is one; true if there was.
    pub fn cancel(&self, host: &str) -> bool {
        let entry = self.with(|streams| streams.remove(host));
        entry.map(|e| e.cancel.cancel()).is_some()
    }

    /// The way down `host`'s stream, if it is on this replica.
    pub fn commands(&self, host: &str) -> Option<mpsc::Sender<Command>> {
        self.with(|streams| streams.get(host).map(|e| e.commands.clone()))
    }

    pub fn contains(&self, host: &str) -> bool {
        self.with(|streams| streams.contains_key(host))
    }

    /// Live streams on this replica.
    pub fn len(&self) -> usize {
        self.with(|streams| streams.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_or_revoked_stream_is_cancelled() {
        let registry = Registry::default();
        let (first, second) = (CancellationToken::new(), CancellationToken::new());
        let (commands, _down) = mpsc::channel(1);
        registry.insert("h", "s1", first.clone(), commands.clone());
        registry.insert("h", "s2", second.clone(), commands);
        assert!(first.is_cancelled() && !second.is_cancelled());
        registry.remove("h", "s1");
        assert_eq!(registry.len(), 1, "s1 no longer owns the entry");
        assert!(registry.cancel("h"));
        assert!(second.is_cancelled() && registry.is_empty());
        assert!(!registry.cancel("h"));
    }
}
