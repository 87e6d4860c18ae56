-- The broadest network the `ban` CIDR policy bans, per source and family,
-- as a prefix length: a list's broader networks are skipped (counted in
-- cidr_skipped), never banned. Existing sources take the defaults, /12 and
-- IPv6 /32; a source may allow at most an IPv4 /8 or an IPv6 /16.
ALTER TABLE blocklist_sources ADD COLUMN ban_min_prefix_v4 BIGINT NOT NULL DEFAULT 12
    CHECK (ban_min_prefix_v4 BETWEEN 8 AND 32);
ALTER TABLE blocklist_sources ADD COLUMN ban_min_prefix_v6 BIGINT NOT NULL DEFAULT 32
    CHECK (ban_min_prefix_v6 BETWEEN 16 AND 128);
