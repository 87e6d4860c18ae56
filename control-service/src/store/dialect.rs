//! What the repositories need of a backend, in one place: [`Dialect`],
//! implemented for [`sqlx::Sqlite`] (in `sqlite.rs`) and
//! [`sqlx::Postgres`] (in `postgres.rs`).
//!
//! Each repository is written once, as `impl<DB: Dialect> … for Store<DB>`,
//! with the statement runner shared with the geo-service
//! ([`bangui_runtime::sql`]: [`Stmt`](bangui_runtime::sql::Stmt),
//! [`SqlBackend`], [`Bind`], [`Decode`]). `Dialect` adds to `SqlBackend`
//! the types this service's statements bind and its rows decode into (as
//! bounds on the database's own associated types, which a bound in
//! supertrait position implies), and what really differs between the
//! dialects here: its associated constants and functions.

pub(crate) use bangui_runtime::sql::{Bind, Decode, SqlBackend};
use sqlx::Database;

use super::{
    actions::ActionRow,
    auth::{SessionRow, SetupTokenRow},
    blocklist::{RunRow, SourceRow},
    history::{ArchivedBan, CountryCount, IpCount, IpPlace, JailBanRow, JailCount},
    hosts::{HostRow, TakenCommand},
    lease::{JobRun, Lease, LeaseGrant, Statements},
};

/// One backend: the bounds the generic repositories need (all implied by
/// this one bound) and the places where the dialects differ. A repository
/// that binds or reads a type not listed here adds it to the list (the
/// compiler names it at the call).
pub(crate) trait Dialect:
    SqlBackend
    + Database<
        // What the statements bind: history, then auth (bool, bytes).
        Arguments: Bind<i64>
                       + Bind<Option<i64>>
                       + Bind<Option<String>>
                       + for<'a> Bind<&'a str>
                       + for<'a> Bind<Option<&'a str>>
                       + Bind<bool>
                       + for<'a> Bind<&'a [u8]>,
        // What the rows decode into, by aggregate: history,
        Row: Decode<(i64,)>
                 + Decode<(Option<i64>,)>
                 + Decode<(String,)>
                 + Decode<(i64, i64)>
                 + Decode<(i64, String)>
                 + Decode<(String, String, i64)>
                 + Decode<(String, Vec<u8>, i64)>
                 + Decode<(i64, i64, Option<i64>, Option<i64>)>
                 + Decode<ArchivedBan>
                 + Decode<CountryCount>
                 + Decode<JailCount>
                 + Decode<IpCount>
                 + Decode<IpPlace>
                 + Decode<JailBanRow>
                 // auth,
                 + Decode<(Vec<u8>,)>
                 + Decode<(i64, Option<i64>)>
                 + Decode<SessionRow>
                 + Decode<SetupTokenRow>
                 // lease and ledger,
                 + Decode<Lease>
                 + Decode<LeaseGrant>
                 + Decode<JobRun>
                 // settings,
                 + Decode<(String, String)>
                 // actions,
                 + Decode<ActionRow>
                 // blocklists.
                 + Decode<SourceRow>
                 + Decode<RunRow>
                 // hosts.
                 + Decode<HostRow>
                 + Decode<(Vec<u8>, Option<i64>)>
                 + Decode<TakenCommand>
                 + Decode<(Option<String>,)>,
    >
{
    /// Rows per archive insert (15 parameters each).
    const ROWS_PER_INSERT: usize;

    /// The placeholder of parameter `n` in a statement built at run time
    /// whose generated placeholders appear in the text in their order, each
    /// once, after any fixed `$k` (k < n) it reuses. SQLite writes `?` (the
    /// next number): sqlx looks every parameter up by its name, and SQLite
    /// finds a name by scanning every named one, so a thousand `$n` bind in
    /// quadratic time (measured: half of a million-address import's CPU).
    fn placeholder(n: usize) -> String;

    /// Taken inside the transaction of an attempt reservation before it
    /// counts, with the client key as `$1`, where the database lets two
    /// writers count at once; `None` where it has one writer.
    const LOCK_CLIENT: Option<&'static str>;

    /// Run after an import changed many entries of a source, where the
    /// planner needs fresh statistics to keep using the entry index (a
    /// PostgreSQL table filled in one transaction looks like it has no
    /// selective column until autovacuum analyzes it: its chunked `IN`
    /// statements then read every row of the source, 15 times slower).
    /// `None` where the planner's defaults already pick the index.
    const ANALYZE_ENTRIES: Option<&'static str>;

    /// Wakes the listeners of channel `$1` with payload `$2`, where the
    /// database has notifications (PostgreSQL's NOTIFY); `None` where it
    /// has one process (SQLite: one replica, nothing to wake).
    const NOTIFY: Option<&'static str>;

    /// The lease and ledger statements in this dialect (its clock, its
    /// row lock).
    fn lease_statements() -> &'static Statements;

    /// The host statements in this dialect (its clock).
    fn host_statements() -> &'static super::hosts::Statements;
}
