-- The fleet's hosts (one fail2ban-agent each) and the one-time tokens they
-- enroll with. Times are Unix milliseconds of the database's clock.
--
-- A host's one live stream is a lease in its row: `stream_id` names the
-- stream (unique per Attach), `stream_holder` the replica serving it,
-- `stream_instance` the agent process (its reconnect takes over at once),
-- `stream_seen_at` the last heartbeat (stale after a few seconds without).
CREATE TABLE hosts (
    id               TEXT   PRIMARY KEY,
    name             TEXT   NOT NULL UNIQUE,
    credential_hash  BLOB   NOT NULL CHECK (length(credential_hash) = 32),
    enrolled_at      INTEGER NOT NULL,
    last_seen        INTEGER,
    agent_version    TEXT   NOT NULL DEFAULT '',
    fail2ban_version TEXT   NOT NULL DEFAULT '',
    jails            TEXT   NOT NULL DEFAULT '[]',
    revoked_at       INTEGER,
    stream_id        TEXT,
    stream_holder    TEXT,
    stream_instance  TEXT,
    stream_seen_at   INTEGER
);

-- Only the SHA-256 of a token is kept. `used_at` is set once, by the one
-- UPDATE that also checks it was unused and unexpired.
CREATE TABLE enrollment_tokens (
    token_hash BLOB   PRIMARY KEY CHECK (length(token_hash) = 32),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    used_by    TEXT
);
