//! What the repositories need of a backend, in one place: [`Dialect`],
//! implemented for [`sqlx::Sqlite`] (in `sqlite.rs`) and
//! [`sqlx::Postgres`] (in `postgres.rs`), and [`Stmt`], a statement that
//! binds and runs through it.
//!
//! Each repository is written once, as `impl<DB: Dialect> … for Store<DB>`.
//! A trait's `where` clauses about other types (`i64: Encode<DB>`) are not
//! implied by `DB: Dialect` in Rust, so the generic code needs nothing of
//! that kind: every capability is a bound on one of the database's own
//! associated types, which a bound in supertrait position does imply —
//! the arguments take each bound type ([`Bind`]), a row decodes into each
//! row type ([`Decode`]), a query result counts its rows ([`Affected`]),
//! and [`Dialect::Exec`] runs statements on a connection. What really
//! differs between the dialects are the associated constants and
//! functions of [`Dialect`].

use sqlx::{Database, Executor, FromRow, IntoArguments, SqlSafeStr, SqlStr, error::BoxDynError};

use super::{
    StoreError,
    actions::ActionRow,
    auth::SessionRow,
    history::{ArchivedBan, CountryCount, IpCount, IpPlace, JailBanRow, JailCount},
    lease::{JobRun, Lease, LeaseGrant, Statements},
};

/// One backend: the bounds the generic repositories need (all implied by
/// this one bound) and the places where the dialects differ. A repository
/// that binds or reads a type not listed here adds it to the list (the
/// compiler names it at the call).
pub(crate) trait Dialect:
    Database<
        // What the statements bind: history, then auth (bool, bytes).
        Arguments: IntoArguments<Self>
                       + Bind<i64>
                       + Bind<Option<i64>>
                       + Bind<Option<String>>
                       + for<'a> Bind<&'a str>
                       + for<'a> Bind<Option<&'a str>>
                       + Bind<bool>
                       + for<'a> Bind<&'a [u8]>,
        QueryResult: Affected,
        // What the rows decode into, by aggregate: history,
        Row: Decode<(i64,)>
                 + Decode<(Option<i64>,)>
                 + Decode<(String,)>
                 + Decode<(i64, i64)>
                 + Decode<(i64, String)>
                 + Decode<(String, String, i64)>
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
                 // lease and ledger,
                 + Decode<Lease>
                 + Decode<LeaseGrant>
                 + Decode<JobRun>
                 // settings,
                 + Decode<(String, String)>
                 // actions.
                 + Decode<ActionRow>,
    >
{
    /// Runs statements on a connection (`&mut` the connection itself).
    type Exec<'c>: Executor<'c, Database = Self>;

    /// "sqlite" or "postgres".
    const BACKEND: &'static str;

    /// Rows per archive insert (14 parameters each).
    const ROWS_PER_INSERT: usize;

    /// Taken inside the transaction of an attempt reservation before it
    /// counts, with the client key as `$1`, where the database lets two
    /// writers count at once; `None` where it has one writer.
    const LOCK_CLIENT: Option<&'static str>;

    /// `conn` as an executor.
    fn exec(conn: &mut Self::Connection) -> Self::Exec<'_>;

    /// The lease and ledger statements in this dialect (its clock, its
    /// row lock).
    fn lease_statements() -> &'static Statements;
}

/// Arguments that take a `T`.
pub trait Bind<T> {
    fn bind_value(&mut self, value: T) -> Result<(), BoxDynError>;
}

impl<'t, A, T> Bind<T> for A
where
    A: sqlx::Arguments,
    T: sqlx::Encode<'t, A::Database> + sqlx::Type<A::Database>,
{
    fn bind_value(&mut self, value: T) -> Result<(), BoxDynError> {
        self.add(value)
    }
}

/// A row that decodes into a `T`.
pub trait Decode<T> {
    fn decode(&self) -> Result<T, sqlx::Error>;
}

impl<R: sqlx::Row, T: for<'r> FromRow<'r, R>> Decode<T> for R {
    fn decode(&self) -> Result<T, sqlx::Error> {
        T::from_row(self)
    }
}

/// A query result: how many rows it changed.
pub trait Affected {
    fn rows_affected(&self) -> u64;
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// A statement and its arguments; a failed bind is reported when it runs,
/// as sqlx's own `bind` does.
pub struct Stmt<DB: Dialect> {
    sql: SqlStr,
    arguments: Result<DB::Arguments, BoxDynError>,
}

impl<DB: Dialect> Stmt<DB> {
    /// A fixed statement.
    pub fn new(sql: impl SqlSafeStr) -> Self {
        Self { sql: sql.into_sql_str(), arguments: Ok(DB::Arguments::default()) }
    }

    /// Binds `value` to the next parameter.
    pub fn bind<T>(mut self, value: T) -> Self
    where
        DB::Arguments: Bind<T>,
    {
        if let Ok(arguments) = &mut self.arguments
            && let Err(e) = arguments.bind_value(value)
        {
            self.arguments = Err(e);
        }
        self
    }

    fn query(self) -> Result<sqlx::query::Query<'static, DB, DB::Arguments>, StoreError> {
        let arguments = self.arguments.map_err(sqlx::Error::Encode)?;
        Ok(sqlx::query_with(self.sql, arguments))
    }

    /// Runs it; how many rows it changed.
    pub async fn execute(self, conn: &mut DB::Connection) -> Result<u64, StoreError> {
        Ok(self.query()?.execute(DB::exec(conn)).await?.rows_affected())
    }

    /// Every row, decoded.
    pub async fn fetch_all<T>(self, conn: &mut DB::Connection) -> Result<Vec<T>, StoreError>
    where
        DB::Row: Decode<T>,
    {
        let rows = self.query()?.fetch_all(DB::exec(conn)).await?;
        Ok(rows.iter().map(Decode::decode).collect::<Result<_, _>>()?)
    }

    /// The one row, decoded.
    pub async fn fetch_one<T>(self, conn: &mut DB::Connection) -> Result<T, StoreError>
    where
        DB::Row: Decode<T>,
    {
        Ok(self.query()?.fetch_one(DB::exec(conn)).await?.decode()?)
    }

    /// The first row if there is one, decoded.
    pub async fn fetch_optional<T>(self, conn: &mut DB::Connection) -> Result<Option<T>, StoreError>
    where
        DB::Row: Decode<T>,
    {
        Ok(self.query()?.fetch_optional(DB::exec(conn)).await?.map(|row| row.decode()).transpose()?)
    }

    /// Every row's first column.
    pub async fn scalars<T>(self, conn: &mut DB::Connection) -> Result<Vec<T>, StoreError>
    where
        DB::Row: Decode<(T,)>,
    {
        Ok(self.fetch_all::<(T,)>(conn).await?.into_iter().map(|(v,)| v).collect())
    }

    /// The one row's first column.
    pub async fn scalar<T>(self, conn: &mut DB::Connection) -> Result<T, StoreError>
    where
        DB::Row: Decode<(T,)>,
    {
        Ok(self.fetch_one::<(T,)>(conn).await?.0)
    }

    /// The first row's first column, if there is a row.
    pub async fn optional_scalar<T>(self, conn: &mut DB::Connection) -> Result<Option<T>, StoreError>
    where
        DB::Row: Decode<(T,)>,
    {
        Ok(self.fetch_optional::<(T,)>(conn).await?.map(|(v,)| v))
    }
}
