-- The blocklist mirror, compact and convergent (issue 20).
--
-- Entries and bans are kept as bytes, not text: an IPv4 network is 6
-- bytes (family 4, the address, the prefix length), an IPv6 one 18
-- (family 6, the address, the prefix length); byte order is the address
-- order, IPv4 first, so both backends sort them as the import merges them.
-- The old text tables are renamed and emptied into the new ones by the
-- service at start (parsing text is not something SQL does well), then
-- left empty.
ALTER TABLE blocklist_entries RENAME TO blocklist_entries_v1;
ALTER TABLE blocklist_bans RENAME TO blocklist_bans_v1;
DROP INDEX blocklist_entries_entry;

-- Which source lists which address or network (after its filters).
CREATE TABLE blocklist_listed (
    source_id BIGINT  NOT NULL,
    net       BYTEA   NOT NULL,
    PRIMARY KEY (source_id, net)
);

-- The bans of a jail that a blocklist import made and still answers for:
-- only these are ever lifted by imports. An operator's UnbanIp or BanIp of
-- one takes it out of here (bans from logs or by hand are never touched).
CREATE TABLE blocklist_owned (
    jail      TEXT    NOT NULL,
    net       BYTEA   NOT NULL,
    PRIMARY KEY (jail, net)
);

-- Addresses an operator unbanned after an import banned them: imports do
-- not ban them again in that jail while the exception stands.
CREATE TABLE blocklist_exceptions (
    jail       TEXT    NOT NULL,
    net        BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (jail, net)
);

-- Who holds a source ("replica#process"): a new process of the same
-- replica releases the holds of the one before at start.
ALTER TABLE blocklist_sources ADD COLUMN held_by TEXT;
-- Set when the source's first import (or a delete) took it: its jail is
-- fixed from then on.
ALTER TABLE blocklist_sources ADD COLUMN jail_fixed BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE blocklist_sources SET jail_fixed = TRUE
    WHERE id IN (SELECT source_id FROM blocklist_runs) OR id IN (SELECT source_id FROM blocklist_entries_v1);

-- Lost bans banned again, and listed addresses left out for an operator's exception.
ALTER TABLE blocklist_runs ADD COLUMN rebanned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blocklist_runs ADD COLUMN excepted BIGINT NOT NULL DEFAULT 0;
