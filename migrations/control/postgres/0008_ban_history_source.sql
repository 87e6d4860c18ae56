-- The blocklist source of a ban archived with origin 'blocklist' (NULL for
-- the other origins).
ALTER TABLE ban_history ADD COLUMN source TEXT;
