-- What a host's agent last pushed with its hello and heartbeats, beside its
-- jail names: each jail's counters (JSON array of {name, currently_failed,
-- total_failed, currently_banned, total_banned}), when the agent read them
-- (the database's clock, Unix ms: the heartbeat's arrival minus the age the
-- agent gave), and its outbox backlog. Reads over many hosts answer from
-- these without asking each host.
ALTER TABLE hosts ADD COLUMN jail_states TEXT NOT NULL DEFAULT '[]';
ALTER TABLE hosts ADD COLUMN states_at INTEGER;
ALTER TABLE hosts ADD COLUMN outbox_backlog INTEGER NOT NULL DEFAULT 0;
