//! Statements written once for both backends: what the stores of both
//! services need of any sqlx database, whatever their dialect.
//!
//! A service's store is `impl<DB: ItsDialect> … for Store<DB>`, where its
//! dialect trait extends [`SqlBackend`] with the types its statements bind
//! and its rows decode into, and with the places where SQLite and
//! PostgreSQL really differ. A trait's `where` clauses about other types
//! (`i64: Encode<DB>`) are not implied by a bound `DB: ItsDialect` in Rust,
//! so nothing here is said that way: every capability is a bound on one of
//! the database's own associated types, which a bound in supertrait
//! position does imply — the arguments take each bound type ([`Bind`]), a
//! row decodes into each row type ([`Decode`]), a query result counts its
//! rows ([`Affected`]), and [`SqlBackend::Exec`] runs statements on a
//! connection. [`Stmt`] binds and runs a statement through those.
//!
//! [`SqlBackend`] is implemented here for [`sqlx::Sqlite`] and
//! [`sqlx::Postgres`].

use sqlx::{
    Database, Executor, FromRow, IntoArguments, PgConnection, Postgres, SqlSafeStr, SqlStr, Sqlite, SqliteConnection,
    error::BoxDynError, pool::PoolConnection,
};

use crate::db::StoreError;

/// A backend as the generic statements see it: arguments that make a
/// query, results that count their rows, an executor on a connection.
pub trait SqlBackend: Database<Arguments: IntoArguments<Self>, QueryResult: Affected> {
    /// Runs statements on a connection (`&mut` the connection itself).
    type Exec<'c>: Executor<'c, Database = Self>;

    /// "sqlite" or "postgres".
    const BACKEND: &'static str;

    /// `conn` as an executor.
    fn exec(conn: &mut Self::Connection) -> Self::Exec<'_>;
}

impl SqlBackend for Sqlite {
    type Exec<'c> = &'c mut SqliteConnection;

    const BACKEND: &'static str = "sqlite";

    fn exec(conn: &mut SqliteConnection) -> &mut SqliteConnection {
        conn
    }
}

impl SqlBackend for Postgres {
    type Exec<'c> = &'c mut PgConnection;

    const BACKEND: &'static str = "postgres";

    fn exec(conn: &mut PgConnection) -> &mut PgConnection {
        conn
    }
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

/// A connection from `pool`, for one statement (what running it on the
/// pool does).
pub async fn conn<DB: Database>(pool: &sqlx::Pool<DB>) -> Result<PoolConnection<DB>, StoreError> {
    Ok(pool.acquire().await?)
}

/// A statement and its arguments; a failed bind is reported when it runs,
/// as sqlx's own `bind` does.
pub struct Stmt<DB: SqlBackend> {
    sql: SqlStr,
    arguments: Result<DB::Arguments, BoxDynError>,
}

impl<DB: SqlBackend> std::fmt::Debug for Stmt<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stmt").field("sql", &self.sql.as_str()).finish_non_exhaustive()
    }
}

impl<DB: SqlBackend> Stmt<DB> {
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
