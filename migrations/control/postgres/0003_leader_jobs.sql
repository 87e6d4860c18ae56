-- The leader lease and the job run ledger. Times are Unix milliseconds from
-- the database's clock.
CREATE TABLE leases (
    name        TEXT   PRIMARY KEY,
    holder      TEXT   NOT NULL,
    term        BIGINT NOT NULL CHECK (term > 0),
    acquired_at BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- A run exists only if its row could be inserted while its term was the
-- lease's current one; UNIQUE (job, scheduled_for) makes a slot run once.
CREATE TABLE job_runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job           TEXT   NOT NULL,
    scheduled_for BIGINT NOT NULL,
    term          BIGINT NOT NULL,
    replica       TEXT   NOT NULL,
    trigger       TEXT   NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    status        TEXT   NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'cancelled')),
    error         TEXT,
    UNIQUE (job, scheduled_for)
);
CREATE INDEX job_runs_job_id ON job_runs (job, id);

-- "Run now" requests: any replica records one, the leader takes it.
CREATE TABLE job_requests (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job          TEXT   NOT NULL,
    requested_at BIGINT NOT NULL,
    requested_by TEXT   NOT NULL,
    taken_at     BIGINT,
    taken_by     TEXT
);
CREATE INDEX job_requests_open ON job_requests (taken_at);
