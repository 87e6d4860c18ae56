-- The ban history archive: what fail2ban forgets after dbpurgeage, kept for
-- months, with the country and AS resolved when archived. Times are Unix
-- seconds. One row per (jail, ip, banned_at, event): archiving is idempotent.
CREATE TABLE ban_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    jail         TEXT    NOT NULL,
    ip           TEXT    NOT NULL,
    banned_at    INTEGER NOT NULL,
    ban_seconds  INTEGER NOT NULL,          -- -1: permanent
    ban_count    INTEGER NOT NULL DEFAULT 1,
    origin       TEXT    NOT NULL CHECK (origin IN ('fail2ban', 'manual', 'blocklist')),
    event        TEXT    NOT NULL CHECK (event IN ('ban', 'unban')),
    failures     INTEGER NOT NULL DEFAULT 0,
    matches      TEXT    NOT NULL DEFAULT '[]',  -- JSON array of log lines, bounded
    country_code TEXT,
    country_name TEXT,
    asn          INTEGER,
    as_org       TEXT,
    archived_at  INTEGER NOT NULL,
    UNIQUE (jail, ip, banned_at, event)
);
-- Newest first, with the id as the tie-breaker: ListBans pages and windows.
CREATE INDEX ban_history_time ON ban_history (banned_at, id);
CREATE INDEX ban_history_jail_time ON ban_history (jail, banned_at);
CREATE INDEX ban_history_country_time ON ban_history (country_code, banned_at);
-- BansByCountry reads this index alone (a covering index).
CREATE INDEX ban_history_country_ip ON ban_history (country_code, ip, banned_at, country_name);
-- Per-IP timelines, and TopIps from the index alone.
CREATE INDEX ban_history_ip_time ON ban_history (ip, banned_at, country_code);
-- Rows still waiting for their country (the geo-service was down).
CREATE INDEX ban_history_no_country ON ban_history (id) WHERE country_code IS NULL;

-- How far each source has been read (e.g. fail2ban's bans table).
CREATE TABLE history_cursors (
    source     TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
