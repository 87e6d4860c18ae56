-- The setup token becomes one row that every replica reads back: at most
-- one token is valid at a time, kept across restarts and rolling updates
-- until Setup uses it or it expires (then the next replica that looks
-- replaces it), and each replica writes the current one to its own token
-- file. The token itself is stored (not its SHA-256) so that replicas can
-- write it; it is only useful while no password exists, and Setup deletes
-- it in the transaction that sets the password. Tokens made before this
-- migration (only their SHA-256 was kept) stop working: the next start
-- makes the new one and writes it to the file. Times are Unix seconds.
DROP TABLE setup_tokens;
CREATE TABLE setup_token (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    token      TEXT    NOT NULL CHECK (length(token) BETWEEN 32 AND 256),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
