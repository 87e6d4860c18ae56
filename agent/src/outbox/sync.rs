//! The host's history sync: every `--history-interval`, fail2ban's
//! database (`--fail2ban-db`, or the file fail2ban names over its socket)
//! is read with the shared no-loss rules into the outbox. It runs whether
//! or not the control plane is reachable: a host cut off for a day keeps
//! its events on disk, and delivers them when it is back.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use bangui_fail2ban::{
    Fail2ban,
    db::Fail2banDb,
    history::{self, SyncError, SyncParams},
};
use tokio_util::sync::CancellationToken;

use super::Outbox;

/// How the sync runs.
#[derive(Debug, Clone, Copy)]
pub struct SyncSettings {
    pub interval: Duration,
    /// How far back the first sync reads fail2ban's table.
    pub backfill: Duration,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// One sync; returns the events written.
async fn sync_with(
    outbox: &Outbox,
    fail2ban: &Fail2ban,
    no_database_said: &AtomicBool,
    backfill: Duration,
) -> Result<u64, String> {
    let path = match fail2ban.database_path().await {
        Ok(Some(path)) => {
            no_database_said.store(false, Ordering::Relaxed);
            path
        }
        Ok(None) => {
            if !no_database_said.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "fail2ban keeps no database (dbfile = :memory: or none): there is no ban history to deliver"
                );
            }
            return Ok(0);
        }
        Err(error) => return Err(format!("cannot find fail2ban's database: {error}; set --fail2ban-db")),
    };
    let db = Fail2banDb::open(&path).await.map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let now = unix_now();
    let backfill_from = now - i64::try_from(backfill.as_secs()).unwrap_or(i64::MAX / 2);
    let result = history::sync(&db, &outbox.sink(now), SyncParams::new(now, backfill_from)).await;
    db.close().await;
    match result {
        Ok(report) => Ok(report.taken),
        Err(SyncError::Read(e)) => Err(format!("cannot read {}: {e}", path.display())),
        Err(SyncError::Sink(e)) => Err(e.to_string()),
    }
}

/// Syncs every `settings.interval` until `stop`.
pub async fn run(outbox: Outbox, fail2ban: Fail2ban, settings: SyncSettings, stop: CancellationToken) {
    let said = AtomicBool::new(false);
    let mut failing = false;
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = sync_with(&outbox, &fail2ban, &said, settings.backfill) => outcome,
        };
        match outcome {
            Ok(written) => {
                if failing {
                    tracing::info!("the history sync reads fail2ban's database again");
                    failing = false;
                }
                if written > 0 {
                    tracing::debug!(written, "history events written to the outbox");
                }
            }
            Err(error) => {
                // Said once per failing stretch; the next run tries again.
                if !failing {
                    tracing::warn!(%error, "history sync failed; retrying every interval");
                    failing = true;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
    }
}
