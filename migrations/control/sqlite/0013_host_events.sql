-- The fleet's history: every archived event names the host whose fail2ban
-- it comes from (a host id, or 'local' for the control-service's own
-- fail2ban), and the uniqueness key includes it (two hosts may ban the
-- same address in the same jail in the same second). SQLite cannot change
-- a UNIQUE constraint in place: the table is rebuilt, ids kept.
CREATE TABLE ban_history_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    host         TEXT    NOT NULL DEFAULT 'local',
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
    source       TEXT,
    UNIQUE (host, jail, ip, banned_at, event)
);
INSERT INTO ban_history_new (id, host, jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures,
                             matches, country_code, country_name, asn, as_org, archived_at, source)
SELECT id, 'local', jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures,
       matches, country_code, country_name, asn, as_org, archived_at, source
FROM ban_history;
DROP TABLE ban_history;
ALTER TABLE ban_history_new RENAME TO ban_history;
CREATE INDEX ban_history_time ON ban_history (banned_at, id);
CREATE INDEX ban_history_jail_time ON ban_history (jail, banned_at);
CREATE INDEX ban_history_country_time ON ban_history (country_code, banned_at);
CREATE INDEX ban_history_country_ip ON ban_history (country_code, ip, banned_at, country_name);
CREATE INDEX ban_history_ip_time ON ban_history (ip, banned_at, country_code);
CREATE INDEX ban_history_no_country ON ban_history (id) WHERE country_code IS NULL;
-- One agent host's events over time (the host filter). Partial: the host
-- `local`'s rows (every row of a single-host install, and every blocklist
-- import's) are left out, so they cost no index bytes; a filter on `local`
-- is served by the uniqueness key, which starts with the host.
CREATE INDEX ban_history_host_time ON ban_history (host, banned_at, id) WHERE host <> 'local';

-- Per host, the last event sequence stored from its agent's outbox. It
-- advances in the transaction that stores the events: an event at or below
-- it is never stored again, a batch that would leave a gap is refused.
CREATE TABLE host_event_cursors (
    host       TEXT    PRIMARY KEY,
    sequence   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
