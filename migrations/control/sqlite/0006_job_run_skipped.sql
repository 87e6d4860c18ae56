-- A run that had nothing it could do (history_sync while fail2ban keeps no
-- database) is recorded as 'skipped', not as a failure. SQLite cannot
-- change a CHECK in place: the table is rebuilt, ids kept.
CREATE TABLE job_runs_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job           TEXT    NOT NULL,
    scheduled_for INTEGER NOT NULL,
    term          INTEGER NOT NULL,
    replica       TEXT    NOT NULL,
    trigger       TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    status        TEXT    NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'cancelled', 'skipped')),
    error         TEXT,
    UNIQUE (job, scheduled_for)
);
INSERT INTO job_runs_new (id, job, scheduled_for, term, replica, trigger, started_at, finished_at, status, error)
    SELECT id, job, scheduled_for, term, replica, trigger, started_at, finished_at, status, error FROM job_runs;
DROP TABLE job_runs;
ALTER TABLE job_runs_new RENAME TO job_runs;
CREATE INDEX job_runs_job_id ON job_runs (job, id);
