//! Hot reload of the database files.
//!
//! geoipupdate (and most tools) replace a database by writing a new file and
//! renaming it over the old one. The watcher follows the directories that
//! hold the configured files; when one of them changes it waits for the
//! writes to settle, then reloads the whole set: every file is opened and
//! verified (metadata, canary lookups, schema) before anything changes, and
//! the new set is swapped in atomically. A bad file is logged and counted;
//! the old set keeps serving.

use std::{
    collections::HashSet,
    ffi::OsString,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    mmdb::{DatabaseInfo, DatabaseSet, DatabaseSource, LoadError},
    resolve::Resolver,
};

/// How long the files must be quiet before a reload: a copy in progress
/// fires many events.
const SETTLE: Duration = Duration::from_millis(300);

/// Reloads the configured databases into the resolver.
#[derive(Debug, Clone)]
pub struct Reloader {
    sources: Arc<[DatabaseSource]>,
    resolver: Resolver,
    metrics: Metrics,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Reloader {
    pub fn new(sources: Vec<DatabaseSource>, resolver: Resolver, metrics: Metrics) -> Self {
        Self { sources: sources.into(), resolver, metrics, lock: Arc::new(tokio::sync::Mutex::new(())) }
    }

    /// Loads and verifies every source, then swaps the set in. On error the
    /// current set stays.
    pub async fn reload(&self) -> Result<Vec<DatabaseInfo>, LoadError> {
        // One reload at a time: the watcher and the RPC may race.
        let _guard = self.lock.lock().await;
        let sources = self.sources.clone();
        let loaded = tokio::task::spawn_blocking(move || DatabaseSet::load(&sources)).await;
        let set = match loaded {
            Ok(Ok(set)) => set,
            Ok(Err(error)) => {
                self.metrics.count_reload(false);
                tracing::error!(%error, "database reload refused; the previous databases keep serving");
                return Err(error);
            }
            Err(join) => {
                self.metrics.count_reload(false);
                return Err(LoadError::Invalid {
                    path: "reload".into(),
                    source: maxminddb::MaxMindDbError::invalid_database(join.to_string()),
                });
            }
        };
        let infos: Vec<DatabaseInfo> = set.databases().cloned().collect();
        self.metrics.set_databases(&set);
        self.resolver.swap(set);
        self.metrics.count_reload(true);
        for db in &infos {
            tracing::info!(database = %db.name, r#type = %db.database_type, build = ?db.build_time, "database reloaded");
        }
        Ok(infos)
    }

    /// Watches the directories of the file sources until `stop`; reloads
    /// when one of the files is created, replaced or written.
    pub fn watch(self, stop: CancellationToken) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
        let files: HashSet<(PathBuf, OsString)> = self
            .sources
            .iter()
            .filter_map(|source| match source {
                DatabaseSource::File(path) => {
                    let name = path.file_name()?.to_owned();
                    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    Some((dir.to_path_buf(), name))
                }
                DatabaseSource::Sample => None,
            })
            .collect();
        let names: HashSet<OsString> = files.iter().map(|(_, name)| name.clone()).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let relevant = matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_))
                && event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.contains(n)));
            if relevant {
                // A full channel already means "reload soon".
                let _ = tx.try_send(());
            }
        })?;
        let dirs: HashSet<&PathBuf> = files.iter().map(|(dir, _)| dir).collect();
        for dir in dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
            tracing::info!(directory = %dir.display(), "watching for database updates");
        }
        Ok(tokio::spawn(async move {
            // The watcher lives as long as this task.
            let _watcher = watcher;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = rx.recv() => if changed.is_none() { return },
                }
                // Let the writes settle: wait until SETTLE passes without events.
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(SETTLE) => break,
                        _ = rx.recv() => {}
                    }
                }
                // Errors are logged and counted inside.
                let _ = self.reload().await;
            }
        }))
    }
}
