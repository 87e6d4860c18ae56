-- Every change made to fail2ban through the control-service: what, where, when,
-- and whether fail2ban accepted it.
CREATE TABLE jail_actions (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,             -- Unix seconds
    action  TEXT   NOT NULL CHECK (action IN ('ban', 'unban', 'start', 'stop', 'idle', 'params', 'ignore_add', 'ignore_remove')),
    jail    TEXT,                        -- NULL: every jail (unban)
    ip      TEXT,
    detail  TEXT   NOT NULL DEFAULT '',
    outcome TEXT   NOT NULL CHECK (outcome IN ('ok', 'failed'))
);
CREATE INDEX jail_actions_at ON jail_actions (at);
