-- Jail operations for a host whose agent stream is on another replica
-- (PostgreSQL: several replicas). The replica that takes the call writes
-- the row and wakes the others (NOTIFY bangui_host_commands, the host id);
-- the replica holding the host's stream takes the row (one UPDATE: taken
-- once), sends it down the stream, and writes the outcome (NOTIFY
-- bangui_host_results, the command id). The caller reads it and deletes
-- the row; at its deadline it deletes the row whatever became of it. A row
-- is never taken after `deadline_at` (the database's clock, Unix ms), so
-- a command is run at most once and never late.
CREATE TABLE host_commands (
    id          TEXT   PRIMARY KEY,
    host_id     TEXT   NOT NULL,
    operation   TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    deadline_at BIGINT NOT NULL,
    taken_by    TEXT,
    taken_at    BIGINT,
    -- JSON: {"reply": "..."} or {"failure": {"kind", "message", "field"}}.
    outcome     TEXT
);

CREATE INDEX host_commands_waiting ON host_commands (host_id, deadline_at) WHERE taken_by IS NULL;
