-- The fleet's history: every archived event names the host whose fail2ban
-- it comes from (a host id, or 'local' for the control-service's own
-- fail2ban), and the uniqueness key includes it (two hosts may ban the
-- same address in the same jail in the same second).
ALTER TABLE ban_history ADD COLUMN host TEXT NOT NULL DEFAULT 'local';
ALTER TABLE ban_history DROP CONSTRAINT ban_history_jail_ip_banned_at_event_key;
ALTER TABLE ban_history ADD CONSTRAINT ban_history_host_event_key UNIQUE (host, jail, ip, banned_at, event);
-- One agent host's events over time (the host filter). Partial: the host
-- `local`'s rows (every row of a single-host install, and every blocklist
-- import's) are left out, so they cost no index bytes; a filter on `local`
-- is served by the uniqueness key, which starts with the host.
CREATE INDEX ban_history_host_time ON ban_history (host, banned_at, id) WHERE host <> 'local';

-- Per host, the last event sequence stored from its agent's outbox. It
-- advances in the transaction that stores the events: an event at or below
-- it is never stored again, a batch that would leave a gap is refused.
CREATE TABLE host_event_cursors (
    host       TEXT   PRIMARY KEY,
    sequence   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
