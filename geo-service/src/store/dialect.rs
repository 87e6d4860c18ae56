//! What the cache needs of a backend, in one place: [`GeoDialect`],
//! implemented for [`sqlx::Sqlite`] (in `sqlite.rs`) and
//! [`sqlx::Postgres`] (in `postgres.rs`).
//!
//! As in the control-service, the statement runner is shared
//! ([`bangui_runtime::sql`]); `GeoDialect` adds to its `SqlBackend` the
//! types the cache's statements bind and its rows decode into (bounds on
//! the database's own associated types, which a bound in supertrait
//! position implies), and what differs between the dialects.

use bangui_runtime::sql::{Bind, Decode, SqlBackend};
use sqlx::Database;

use super::DbRow;

/// One backend: the bounds the generic cache needs (all implied by this
/// one bound) and the place where the dialects differ.
pub(crate) trait GeoDialect:
    SqlBackend
    + Database<
        Arguments: Bind<i64> + Bind<Option<i64>> + for<'a> Bind<&'a str> + for<'a> Bind<Option<&'a str>>,
        Row: Decode<DbRow> + Decode<(String,)> + Decode<(i64, i64)>,
    >
{
    /// The larger of two values, as a function of two arguments (in the
    /// upsert and the `last_seen` refresh).
    const GREATEST: &'static str;
}
