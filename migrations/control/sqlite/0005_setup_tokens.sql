-- One-time setup tokens (only their SHA-256): while no password exists,
-- each replica that has no valid token file makes one; Setup consumes one
-- and deletes them all. Times are Unix seconds.
CREATE TABLE setup_tokens (
    token_sha256 BLOB    PRIMARY KEY CHECK (length(token_sha256) = 32),
    created_at   INTEGER NOT NULL
);
