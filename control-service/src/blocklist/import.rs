//! One import: download, read, filter, then mirror the list into the jail.
//!
//! The jail is meant to hold the list. What is listed and not banned is
//! banned; what the source listed before and no longer does is unbanned,
//! unless another source of the same jail lists it, and only if a
//! blocklist import banned it (`blocklist_bans`): a ban fail2ban made from
//! logs, or an operator made by hand, is never lifted here.
//!
//! Bans go many addresses per `banip` command ([`CHUNK`]), only for
//! addresses no import banned yet; fail2ban answers how many it newly
//! banned. When that is not all and not none, fail2ban's database says
//! which: the rows written after the command was sent. fail2ban's own
//! `get <jail> banned <ip>…` is not used: it scans the jail's whole ban
//! list once per address asked about.
//!
//! Order of writes: a failure at any point never makes an import lift a
//! ban it did not make.
//! 1. a ban is claimed (`own`) after fail2ban made it: a crash between
//!    leaves a ban no import claims, which imports then leave alone;
//! 2. an unban is sent before its claim is dropped (a crash between leaves
//!    a claim on an address that is not banned: lifting it is a no-op);
//! 3. the source's entries, the body it saw and the run row are written
//!    last, in one transaction. A run that did not finish leaves the old
//!    entries and no "seen body", so the next run downloads and applies the
//!    whole list again.

use std::cmp::Ordering;

use super::*;
use crate::kinds::Event;

/// Addresses per fail2ban command.
pub(super) const CHUNK: usize = 500;

/// How a list is applied: what it asked and what fail2ban did.
struct Mirror<'a> {
    blocklists: &'a Blocklists,
    inner: &'a Inner,
    source: &'a Source,
    jail: JailName,
    counts: ImportCounts,
    /// Set when fail2ban stopped answering: the rest is not tried.
    stopped: Option<String>,
    /// A command changed fail2ban (a failure after it makes the run partial).
    sent_any: bool,
}

impl Blocklists {
    /// Imports source `id` once and records the run. Only one import runs
    /// at a time in this process; the source is held in the database for
    /// the run (a delete waits for it).
    pub(super) async fn import(&self, id: i64, trigger: RunTrigger) -> Result<ImportRun, BlocklistError> {
        let _one_at_a_time = self.inner.importing.lock().await;
        let source = self.get(id).await?;
        let started_at = self.inner.clock.now();
        if !self.inner.store.hold_source(id, started_at, started_at - STALE_HOLD).await? {
            return Err(BlocklistError::Busy(id));
        }
        let mut run = ImportRun {
            id: 0,
            source_id: id,
            source_name: source.spec.name.clone(),
            trigger,
            started_at,
            finished_at: started_at,
            status: ImportStatus::Failed,
            http_status: None,
            bytes: 0,
            sha256: None,
            counts: ImportCounts::default(),
            bad_lines: Vec::new(),
            error: None,
        };
        let applied = self.import_held(&source, &mut run).await;
        run.finished_at = self.inner.clock.now();
        let (listed, added, removed, seen) = match applied {
            Ok(Applied::Mirrored { listed, added, removed, seen }) => (listed, added, removed, Some(seen)),
            Ok(Applied::Unchanged) => (Vec::new(), None, Vec::new(), None),
            Err(error) => {
                run.status = ImportStatus::Failed;
                run.error = Some(error);
                (Vec::new(), None, Vec::new(), None)
            }
        };
        // A first import adds the whole list: no copy of it is made.
        let added = added.as_deref().unwrap_or(&listed);
        let commit = ImportCommit { run: &run, added, removed: &removed, seen };
        match self.inner.store.finish_import(&commit, KEEP_RUNS).await {
            Ok(run_id) => run.id = run_id,
            Err(error) => {
                if let Err(e) = self.inner.store.release_source(id).await {
                    tracing::warn!(error = %e, id, "cannot release the source");
                }
                return Err(error.into());
            }
        }
        let c = &run.counts;
        tracing::info!(
            source = %source.spec.name, status = %run.status, valid = c.valid, newly_banned = c.newly_banned,
            unbanned = c.unbanned, failed = c.failed, invalid = c.invalid, "blocklist import"
        );
        Ok(run)
    }

    /// The import's work on a held source; fills `run` as it goes. `Err`:
    /// nothing was applied, the reason.
    async fn import_held(&self, source: &Source, run: &mut ImportRun) -> Result<Applied, String> {
        let spec = &source.spec;
        let jail = JailName::parse("jail", &spec.jail).map_err(|e| e.to_string())?;
        let validators = Validators { etag: source.etag.clone(), last_modified: source.last_modified.clone() };
        let max_bytes = u64::try_from(spec.max_bytes).unwrap_or(DEFAULT_MAX_BYTES);
        let limits = parse_limits(spec);
        let download = match self.inner.fetcher.fetch(&spec.url, max_bytes, &validators, &limits).await {
            Ok(Fetched::NotModified { status }) => {
                run.http_status = Some(status);
                run.status = ImportStatus::Unchanged;
                return Ok(Applied::Unchanged);
            }
            Ok(Fetched::Body(download)) => download,
            Err(FetchError::Parse { status, bytes, sha256, error }) => {
                run.http_status = Some(status);
                run.bytes = bytes;
                run.sha256 = sha256;
                if let ParseError::NotAList { valid, invalid, first_bad } = &error {
                    run.counts.valid = *valid;
                    run.counts.invalid = *invalid;
                    run.bad_lines = first_bad.iter().cloned().collect();
                }
                return Err(format!("not a usable list: {error}"));
            }
            Err(error) => {
                run.http_status = error.http_status();
                return Err(format!("download failed: {error}"));
            }
        };
        run.http_status = Some(download.status);
        run.bytes = download.bytes;
        run.sha256 = Some(download.sha256.clone());
        if source.sha256.as_deref() == Some(download.sha256.as_str()) {
            run.status = ImportStatus::Unchanged;
            return Ok(Applied::Unchanged);
        }
        // The first command to fail2ban: down, or the jail missing, and
        // nothing is applied.
        let ignore = self.inner.fail2ban.ignore_list(&jail).await.map_err(|e| BlocklistError::from(e).to_string())?;
        self.refresh_hold(source.id).await;
        let seen = SeenBody {
            etag: download.validators.etag,
            last_modified: download.validators.last_modified,
            sha256: Some(download.sha256),
        };
        let parsed = download.parsed;
        run.bad_lines = parsed.bad_lines;
        run.counts = parsed.counts;
        let mut kept = parsed.entries;
        Exclusions::new(&ignore, &self.inner.config.never_ban).apply(&mut kept, &mut run.counts);
        let mut listed: Vec<String> = kept.iter().map(entry_text).collect();
        drop(kept);
        listed.sort_unstable();
        listed.dedup();

        let mut before = self.inner.store.entries(source.id).await.map_err(|e| e.to_string())?;
        let (added, removed) = if before.is_empty() {
            (None, Vec::new())
        } else {
            // Byte order, whatever the database's collation.
            before.sort_unstable();
            let (added, removed) = diff(before, &listed);
            (Some(added), removed)
        };

        let mut mirror = Mirror {
            blocklists: self,
            inner: &self.inner,
            source,
            jail,
            counts: run.counts,
            stopped: None,
            sent_any: false,
        };
        let outcome = mirror.apply(&listed, &removed).await;
        run.counts = mirror.counts;
        outcome?;
        run.status = match (&mirror.stopped, run.counts.failed) {
            (None, 0) => ImportStatus::Ok,
            _ => ImportStatus::Partial,
        };
        run.error = mirror.stopped.clone().or_else(|| {
            (run.counts.failed > 0).then(|| format!("fail2ban did not carry out {} bans or unbans", run.counts.failed))
        });
        // A partial import forgets the body it saw, so the next run applies
        // the whole list again and retries what failed; and it keeps the
        // entries that left the list (their unbans may not have been sent),
        // so the next run unbans them.
        let (seen, removed) =
            if run.status == ImportStatus::Ok { (seen, removed) } else { (SeenBody::default(), Vec::new()) };
        Ok(Applied::Mirrored { listed, added, removed, seen })
    }
}

impl Blocklists {
    /// Marks the held source as still being imported (a delete elsewhere
    /// takes a hold only once it went stale).
    async fn refresh_hold(&self, id: i64) {
        let now = self.inner.clock.now();
        // Taken whatever its age: this import holds it.
        if let Err(error) = self.inner.store.hold_source(id, now, i64::MAX).await {
            tracing::warn!(%error, id, "cannot refresh the import's hold on its source");
        }
    }
}

/// What an import applied.
enum Applied {
    /// 304, or the same body as the last import: nothing sent to fail2ban.
    Unchanged,
    /// The list was mirrored (perhaps partly): what it lists, what it
    /// added (`None`: all of it, the source listed nothing before) and
    /// removed.
    Mirrored { listed: Vec<String>, added: Option<Vec<String>>, removed: Vec<String>, seen: SeenBody },
}

impl Mirror<'_> {
    /// Bans what `listed` has and the jail lacks, unbans what `removed`
    /// has that no other source lists and an import banned. `Err` only when
    /// nothing could be done at all (fail2ban down at the first command).
    async fn apply(&mut self, listed: &[String], removed: &[String]) -> Result<(), String> {
        for (i, chunk) in listed.chunks(CHUNK).enumerate() {
            self.blocklists.refresh_hold(self.source.id).await;
            self.ban_chunk(chunk).await?;
            if self.stopped.is_some() {
                // What was not tried counts as failed.
                self.counts.failed += listed.len().saturating_sub((i + 1) * CHUNK) as u64;
                break;
            }
        }
        if self.stopped.is_none() {
            self.unban_removed(removed).await;
        }
        Ok(())
    }

    /// Bans the addresses of `chunk` no import banned yet.
    ///
    /// fail2ban answers how many of a `banip` command's addresses it newly
    /// banned. All of them: every one is this import's. None: every one was
    /// banned already (from a log, by hand). Some: fail2ban's database
    /// tells which, by the rows written after the command was sent. Asking
    /// fail2ban first (`get <jail> banned <ip>…`) would cost it a scan of
    /// the jail's whole ban list per address.
    async fn ban_chunk(&mut self, chunk: &[String]) -> Result<(), String> {
        let inner = self.inner;
        let jail = self.jail.to_string();
        let owned = match inner.store.owned(&jail, chunk).await {
            Ok(owned) => owned.into_iter().collect::<std::collections::HashSet<String>>(),
            Err(error) => {
                self.counts.failed += chunk.len() as u64;
                self.stopped = Some(format!("cannot read which bans imports made: {error}"));
                return Ok(());
            }
        };
        // Banned by an import before: still banned (the jail's bans are permanent).
        self.counts.already_banned += owned.len() as u64;
        let candidates: Vec<String> = chunk.iter().filter(|e| !owned.contains(*e)).cloned().collect();
        drop(owned);
        if candidates.is_empty() {
            return Ok(());
        }
        let mark = inner.fail2ban.bans_mark().await;
        let sent = inner.clock.now();
        let newly = match inner.fail2ban.ban_many(&self.jail, &candidates).await {
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX).min(candidates.len()),
            Err(error) => return self.stop(&error, candidates.len()),
        };
        self.sent_any = true;
        let answered = inner.clock.now();
        self.counts.newly_banned += newly as u64;
        self.counts.already_banned += (candidates.len() - newly) as u64;
        let ours = if newly == candidates.len() {
            candidates
        } else if newly == 0 {
            Vec::new()
        } else {
            let found = match mark {
                Some(mark) => inner.fail2ban.banned_after(&self.jail, &candidates, mark, newly).await,
                None => None,
            };
            match found {
                Some(found) => found,
                None => {
                    // No database to tell: claim none (a ban left behind is
                    // safer than lifting one fail2ban made).
                    tracing::warn!(newly, jail, "cannot tell which bans are new without fail2ban's database");
                    Vec::new()
                }
            }
        };
        if ours.is_empty() {
            return Ok(());
        }
        if let Err(error) = inner.store.own(&jail, self.source.id, &ours, answered).await {
            // Banned but unclaimed: the next import sees them as banned by
            // someone else and leaves them; never unbanned by an import.
            tracing::warn!(%error, bans = ours.len(), "cannot record the bans this import made");
        }
        // fail2ban stamps every ban of one command with the same moment, as
        // its database has it: the archive uses that stamp, so the history
        // sync knows these bans and does not archive them a second time.
        let stamp = inner.fail2ban.ban_row(&self.jail, &ours[0], sent - 1, answered + 1).await;
        let at = stamp.map_or(sent, |(at, _)| at);
        let bantime = match stamp {
            Some((_, seconds)) => seconds,
            None => self.bantime().await,
        };
        inner
            .history
            .record_blocklist(self.jail.as_str(), &self.source.spec.name, &ours, at, bantime, Event::Ban)
            .await;
        Ok(())
    }

    /// Unbans what left the list, where no other source lists it and an
    /// import banned it.
    async fn unban_removed(&mut self, removed: &[String]) {
        let inner = self.inner;
        let store = &inner.store;
        let jail = self.jail.to_string();
        for chunk in removed.chunks(CHUNK) {
            self.blocklists.refresh_hold(self.source.id).await;
            let elsewhere = match store.listed_elsewhere(self.source.id, &jail, chunk).await {
                Ok(found) => found,
                Err(error) => {
                    self.stopped = Some(format!("cannot read the other sources: {error}"));
                    return;
                }
            };
            let candidates: Vec<String> = chunk.iter().filter(|e| !elsewhere.contains(e)).cloned().collect();
            let owned = match store.owned(&jail, &candidates).await {
                Ok(owned) => owned,
                Err(error) => {
                    self.stopped = Some(format!("cannot read which bans imports made: {error}"));
                    return;
                }
            };
            if owned.is_empty() {
                continue;
            }
            match inner.fail2ban.unban_many(&self.jail, &owned).await {
                Ok(n) => self.counts.unbanned += n,
                Err(error) => {
                    self.counts.failed += owned.len() as u64;
                    self.stopped = Some(format!("fail2ban: {error}"));
                    return;
                }
            }
            if let Err(error) = store.disown(&jail, &owned).await {
                tracing::warn!(%error, "cannot drop the claims of lifted bans; the next import retries");
            }
            let at = inner.clock.now();
            inner.history.record_blocklist(&jail, &self.source.spec.name, &owned, at, 0, Event::Unban).await;
        }
    }

    /// fail2ban stopped answering: at the first command, nothing was done
    /// and the run fails; later, the run is partial.
    fn stop(&mut self, error: &Fail2banError, untried: usize) -> Result<(), String> {
        if !self.sent_any {
            return Err(format!("fail2ban: {error}"));
        }
        self.counts.failed += untried as u64;
        self.stopped = Some(format!("fail2ban: {error}"));
        Ok(())
    }

    /// The jail's ban length, for the archive (-1 when it cannot be read:
    /// the jail is meant to ban for good).
    async fn bantime(&self) -> i64 {
        let inner = self.inner;
        inner.fail2ban.bantime(&self.jail).await.unwrap_or(-1)
    }
}

/// What `after` has that `before` lacks (copied), and the reverse (moved
/// out of `before`); both sorted.
fn diff(before: Vec<String>, after: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut b, mut a) = (before.into_iter().peekable(), after.iter().peekable());
    loop {
        match (b.peek(), a.peek()) {
            (Some(x), Some(y)) => match x.as_str().cmp(y.as_str()) {
                Ordering::Less => removed.extend(b.next()),
                Ordering::Greater => added.extend(a.next().cloned()),
                Ordering::Equal => {
                    b.next();
                    a.next();
                }
            },
            (Some(_), None) => removed.extend(b.by_ref()),
            (None, Some(_)) => added.extend(a.by_ref().cloned()),
            (None, None) => return (added, removed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_difference_of_two_sorted_lists() {
        let (added, removed) = diff(strings(&["a", "c", "d"]), &strings(&["b", "c", "e", "f"]));
        assert_eq!(added, strings(&["b", "e", "f"]));
        assert_eq!(removed, strings(&["a", "d"]));
        assert_eq!(diff(vec![], &strings(&["x"])), (strings(&["x"]), vec![]));
        assert_eq!(diff(strings(&["x"]), &[]), (vec![], strings(&["x"])));
    }
}
