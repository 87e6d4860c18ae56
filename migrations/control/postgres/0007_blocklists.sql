-- Blocklist sources: public lists of bad addresses, each mirrored into a
-- jail on its schedule. Times are Unix seconds.
CREATE TABLE blocklist_sources (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    url             TEXT    NOT NULL,
    enabled         BOOLEAN NOT NULL,
    jail            TEXT    NOT NULL,
    schedule        TEXT    NOT NULL,  -- six-field cron; '' = the runtime setting's default
    cidr_policy     TEXT    NOT NULL CHECK (cidr_policy IN ('skip', 'ban', 'expand')),
    max_bytes       BIGINT  NOT NULL,
    max_entries     BIGINT  NOT NULL,
    -- What the last successful import saw: the next download is conditional.
    etag            TEXT,
    last_modified   TEXT,
    sha256          TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    importing_since BIGINT             -- set while an import (or a delete) holds the source; NULL otherwise
);

-- Which source lists which address or network (the entry as sent to
-- fail2ban): what an import compares the new list with.
CREATE TABLE blocklist_entries (
    source_id BIGINT NOT NULL,
    entry     TEXT   NOT NULL,
    PRIMARY KEY (source_id, entry)
);
-- "Listed by another source": an entry's sources without a scan.
CREATE INDEX blocklist_entries_entry ON blocklist_entries (entry);

-- Addresses in a jail that a blocklist import banned: only these are ever
-- unbanned by imports (bans from logs or by hand are never touched).
-- source_id: the source whose import banned it.
CREATE TABLE blocklist_bans (
    jail      TEXT   NOT NULL,
    entry     TEXT   NOT NULL,
    source_id BIGINT NOT NULL,
    banned_at BIGINT NOT NULL,
    PRIMARY KEY (jail, entry)
);

-- One row per import: what it saw and did. Only the newest runs of each
-- source are kept.
CREATE TABLE blocklist_runs (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id      BIGINT  NOT NULL,
    source_name    TEXT    NOT NULL,
    trigger        TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    started_at     BIGINT  NOT NULL,
    finished_at    BIGINT  NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('ok', 'unchanged', 'partial', 'failed')),
    http_status    INTEGER,
    bytes          BIGINT  NOT NULL DEFAULT 0,
    sha256         TEXT,
    valid          BIGINT  NOT NULL DEFAULT 0,
    invalid        BIGINT  NOT NULL DEFAULT 0,
    duplicate      BIGINT  NOT NULL DEFAULT 0,
    reserved       BIGINT  NOT NULL DEFAULT 0,
    ignored        BIGINT  NOT NULL DEFAULT 0,
    never_ban      BIGINT  NOT NULL DEFAULT 0,
    cidr_skipped   BIGINT  NOT NULL DEFAULT 0,
    already_banned BIGINT  NOT NULL DEFAULT 0,
    newly_banned   BIGINT  NOT NULL DEFAULT 0,
    unbanned       BIGINT  NOT NULL DEFAULT 0,
    failed         BIGINT  NOT NULL DEFAULT 0,
    bad_lines      TEXT    NOT NULL DEFAULT '[]',  -- JSON array of {"line": n, "text": "..."} (the first 20)
    error          TEXT
);
-- A source's runs newest first (paging, retention).
CREATE INDEX blocklist_runs_source_id ON blocklist_runs (source_id, id);
