-- The leader lease and the job run ledger. Times are Unix milliseconds from
-- the database's clock.
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    term        INTEGER NOT NULL CHECK (term > 0),
    acquired_at INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- A run exists only if its row could be inserted while its term was the
-- lease's current one; UNIQUE (job, scheduled_for) makes a slot run once.
CREATE TABLE job_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job           TEXT    NOT NULL,
    scheduled_for INTEGER NOT NULL,
    term          INTEGER NOT NULL,
    replica       TEXT    NOT NULL,
    trigger       TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    status        TEXT    NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'cancelled')),
    error         TEXT,
    UNIQUE (job, scheduled_for)
);
CREATE INDEX job_runs_job_id ON job_runs (job, id);

-- "Run now" requests: any replica records one, the leader takes it.
CREATE TABLE job_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job          TEXT    NOT NULL,
    requested_at INTEGER NOT NULL,
    requested_by TEXT    NOT NULL,
    taken_at     INTEGER,
    taken_by     TEXT
);
CREATE INDEX job_requests_open ON job_requests (taken_at);
