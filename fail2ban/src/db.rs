//! fail2ban's own SQLite database (`get dbfile`), read-only: the `bans`
//! table, read in short statements (each its own transaction) so fail2ban's
//! writer is never held up for long.
//!
//! Whatever a row holds, reading it costs a bounded amount: rows are
//! streamed and a batch stops at [`ReadLimits::batch_bytes`]; `data` (JSON
//! with the log lines, possibly huge) comes back whole only up to
//! [`DATA_WHOLE_MAX`] bytes, cut by SQLite (the last lines, each cut) up to
//! [`DATA_CUT_MAX`] bytes, and not at all beyond. Text columns are read as
//! bytes, so a row that is not UTF-8 is still read.

use std::{collections::HashMap, path::Path, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};
use tokio_stream::{Stream, StreamExt};

/// `data` up to this many bytes is read as stored.
pub const DATA_WHOLE_MAX: i64 = 64 * 1024;
/// Larger `data`, up to this many bytes, is cut by SQLite; beyond it,
/// not read at all (SQLite would hold the whole value to cut it).
pub const DATA_CUT_MAX: i64 = 4 * 1024 * 1024;
/// Log lines SQLite keeps from a cut `data`, and characters per line.
pub const CUT_LINES: u32 = 20;
pub const CUT_LINE_CHARS: u32 = 500;

/// A ban's `data` column, as far as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanData {
    /// NULL.
    Null,
    /// The bytes as stored (at most [`DATA_WHOLE_MAX`]).
    Whole(Vec<u8>),
    /// A larger JSON value, cut by SQLite to
    /// `{"failures": n, "matches": [the last lines, each cut]}`.
    Cut(Vec<u8>),
    /// Larger than [`DATA_WHOLE_MAX`] and not JSON (SQLite's `json_valid`).
    NotJson { bytes: i64 },
    /// Larger than [`DATA_CUT_MAX`]: not read.
    TooLarge { bytes: i64 },
}

impl BanData {
    /// Bytes held.
    pub fn len(&self) -> usize {
        match self {
            BanData::Whole(b) | BanData::Cut(b) => b.len(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A row of fail2ban's `bans` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail2banBan {
    pub rowid: i64,
    /// As stored (fail2ban writes UTF-8; a damaged row may not be).
    pub jail: Vec<u8>,
    pub ip: Vec<u8>,
    /// Unix seconds.
    pub timeofban: i64,
    /// -1: permanent.
    pub bantime: i64,
    pub bancount: i64,
    /// JSON: `{"matches": [...], "failures": n}`.
    pub data: BanData,
}

impl Fail2banBan {
    /// Bytes this row holds (for the batch budget).
    pub fn size(&self) -> usize {
        64 + self.jail.len() + self.ip.len() + self.data.len()
    }
}

/// The key of a row in (jail, timeofban, rowid) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanKey {
    pub rowid: i64,
    pub ip: Vec<u8>,
    pub timeofban: i64,
}

/// How much one read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    pub rows: u32,
    /// The batch ends after the row that reaches this many bytes.
    pub batch_bytes: usize,
}

#[derive(Debug, sqlx::FromRow)]
struct RawBan {
    rowid: i64,
    jail: Vec<u8>,
    ip: Vec<u8>,
    timeofban: i64,
    bantime: i64,
    bancount: i64,
    data_bytes: Option<i64>,
    data: Option<Vec<u8>>,
    cut: Option<Vec<u8>>,
}

impl From<RawBan> for Fail2banBan {
    fn from(raw: RawBan) -> Self {
        let data = match (raw.data_bytes, raw.data, raw.cut) {
            (None, _, _) => BanData::Null,
            (Some(_), Some(whole), _) => BanData::Whole(whole),
            (Some(bytes), None, _) if bytes > DATA_CUT_MAX => BanData::TooLarge { bytes },
            (Some(_), None, Some(cut)) => BanData::Cut(cut),
            (Some(bytes), None, None) => BanData::NotJson { bytes },
        };
        Fail2banBan {
            rowid: raw.rowid,
            jail: raw.jail,
            ip: raw.ip,
            timeofban: raw.timeofban,
            bantime: raw.bantime,
            bancount: raw.bancount,
            data,
        }
    }
}

/// The columns of a [`RawBan`]. `octet_length` reads a value's size from
/// the record header without loading it; `data` is loaded only when it is
/// returned whole or cut. A cut keeps what the archive keeps: `failures`
/// and the last [`CUT_LINES`] lines (a line stored as a list of parts is
/// joined), each cut to [`CUT_LINE_CHARS`] characters.
fn columns() -> String {
    let (whole, cut, lines, chars) = (DATA_WHOLE_MAX, DATA_CUT_MAX, CUT_LINES, CUT_LINE_CHARS);
    format!(
        "rowid, CAST(jail AS BLOB) AS jail, CAST(ip AS BLOB) AS ip, \
         ifnull(CAST(timeofban AS INTEGER), 0) AS timeofban, ifnull(CAST(bantime AS INTEGER), 0) AS bantime, \
         ifnull(CAST(bancount AS INTEGER), 1) AS bancount, \
         octet_length(data) AS data_bytes, \
         CASE WHEN octet_length(data) <= {whole} THEN CAST(data AS BLOB) END AS data, \
         CASE WHEN octet_length(data) > {whole} AND octet_length(data) <= {cut} \
              AND json_valid(CAST(data AS TEXT)) THEN CAST(json_object( \
                'failures', json_extract(CAST(data AS TEXT), '$.failures'), \
                'matches', (SELECT json_group_array(line ORDER BY key) FROM ( \
                    SELECT m.key AS key, CASE m.type \
                        WHEN 'text' THEN substr(m.value, 1, {chars}) \
                        WHEN 'array' THEN (SELECT substr(group_concat(p.value, '' ORDER BY p.key), 1, {chars}) \
                                           FROM json_each(m.value) AS p WHERE p.type = 'text') \
                        ELSE substr(CAST(m.value AS TEXT), 1, {chars}) END AS line \
                    FROM json_each(CAST(data AS TEXT), '$.matches') AS m \
                    ORDER BY m.key DESC LIMIT {lines}))) AS BLOB) END AS cut"
    )
}

/// fail2ban's database, opened read-only.
#[derive(Debug, Clone)]
pub struct Fail2banDb {
    pool: SqlitePool,
}

impl Fail2banDb {
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(2))
            // Rows in flight between SQLite's thread and ours.
            .row_buffer_size(16);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        Ok(Self { pool })
    }

    /// Bans after `after_rowid`, in rowid (insertion) order, within `limits`.
    pub async fn bans_after(&self, after_rowid: i64, limits: ReadLimits) -> Result<Vec<Fail2banBan>, sqlx::Error> {
        let sql = format!("SELECT {} FROM bans WHERE rowid > ?1 AND ip IS NOT NULL ORDER BY rowid LIMIT ?2", columns());
        let query =
            sqlx::query_as::<_, RawBan>(sqlx::AssertSqlSafe(sql)).bind(after_rowid).bind(i64::from(limits.rows));
        Self::collect(query.fetch(&self.pool), limits.batch_bytes).await
    }

    /// The bans among `rowids` (ascending), in rowid order, within `limits`.
    pub async fn bans_by_rowid(&self, rowids: &[i64], limits: ReadLimits) -> Result<Vec<Fail2banBan>, sqlx::Error> {
        let list = serde_json::to_string(rowids).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT {} FROM bans WHERE rowid IN (SELECT value FROM json_each(?1)) AND ip IS NOT NULL \
             ORDER BY rowid LIMIT ?2",
            columns()
        );
        let query = sqlx::query_as::<_, RawBan>(sqlx::AssertSqlSafe(sql)).bind(list).bind(i64::from(limits.rows));
        Self::collect(query.fetch(&self.pool), limits.batch_bytes).await
    }

    /// Takes rows until `budget` bytes; dropping the stream ends the
    /// statement (and its read transaction) at once.
    async fn collect(
        mut rows: impl Stream<Item = Result<RawBan, sqlx::Error>> + Unpin,
        budget: usize,
    ) -> Result<Vec<Fail2banBan>, sqlx::Error> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(raw) = rows.next().await {
            let ban = Fail2banBan::from(raw?);
            bytes += ban.size();
            out.push(ban);
            if bytes >= budget {
                break;
            }
        }
        Ok(out)
    }

    /// The jails that have bans (an index skip over `bans(jail, …)`: one
    /// lookup per jail).
    pub async fn jails(&self) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar(
            "WITH RECURSIVE j(name) AS ( \
                 SELECT (SELECT min(jail) FROM bans) \
                 UNION ALL SELECT (SELECT min(jail) FROM bans WHERE jail > j.name) FROM j WHERE j.name IS NOT NULL) \
             SELECT CAST(name AS BLOB) FROM j WHERE name IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Up to `limit` keys of `jail`'s bans after (`timeofban`, `rowid`) in
    /// that order, with rowid at most `max_rowid`: a range of fail2ban's
    /// `bans(jail, timeofban)` index. Rows whose time is not an integer are
    /// left to the rowid pass.
    pub async fn keys_since(
        &self,
        jail: &[u8],
        after: (i64, i64),
        max_rowid: i64,
        limit: u32,
    ) -> Result<Vec<BanKey>, sqlx::Error> {
        let rows: Vec<(i64, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT rowid, CAST(ip AS BLOB), timeofban FROM bans \
             WHERE jail = CAST(?1 AS TEXT) AND timeofban >= ?2 AND (timeofban > ?2 OR rowid > ?3) \
             AND rowid <= ?4 AND ip IS NOT NULL AND typeof(timeofban) = 'integer' \
             ORDER BY timeofban, rowid LIMIT ?5",
        )
        .bind(jail)
        .bind(after.0)
        .bind(after.1)
        .bind(max_rowid)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(rowid, ip, timeofban)| BanKey { rowid, ip, timeofban }).collect())
    }

    /// The largest rowid (0 for an empty table).
    pub async fn max_rowid(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT coalesce(max(rowid), 0) FROM bans").fetch_one(&self.pool).await
    }

    /// The database's ban times of `jail` from `since` on, by IP.
    pub async fn ban_times_since(&self, jail: &str, since: i64) -> Result<HashMap<String, Vec<i64>>, sqlx::Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT ip, timeofban FROM bans WHERE jail = ?1 AND timeofban >= ?2 AND ip IS NOT NULL")
                .bind(jail)
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        let mut by_ip: HashMap<String, Vec<i64>> = HashMap::with_capacity(rows.len());
        for (ip, at) in rows {
            by_ip.entry(ip).or_default().push(at);
        }
        Ok(by_ip)
    }

    /// The addresses of `jail`'s rows written after row `mark` (a new
    /// row always takes a rowid above the largest there is).
    pub async fn banned_after(&self, jail: &str, mark: i64) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT ip FROM bans WHERE rowid > ?2 AND jail = ?1 AND ip IS NOT NULL")
            .bind(jail)
            .bind(mark)
            .fetch_all(&self.pool)
            .await
    }

    /// The database's row for one ban of `ip` in `jail` banned within
    /// `from..=to`: its time and ban length.
    pub async fn ban_time(&self, jail: &str, ip: &str, from: i64, to: i64) -> Result<Option<(i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT timeofban, bantime FROM bans WHERE jail = ?1 AND ip = ?2 AND timeofban BETWEEN ?3 AND ?4 \
             ORDER BY timeofban DESC LIMIT 1",
        )
        .bind(jail)
        .bind(ip)
        .bind(from)
        .bind(to)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
