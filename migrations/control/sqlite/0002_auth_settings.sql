-- The master password (one row), sessions, login attempts (throttling that
-- holds across replicas) and runtime settings. Times are Unix seconds.
CREATE TABLE admin_password (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    phc        TEXT    NOT NULL CHECK (phc LIKE '$argon2id$%'),
    updated_at INTEGER NOT NULL
);

-- Only the SHA-256 of a token is stored, never the token.
CREATE TABLE sessions (
    token_sha256 BLOB    PRIMARY KEY CHECK (length(token_sha256) = 32),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    client       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE login_attempts (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    client  TEXT    NOT NULL,
    success INTEGER NOT NULL CHECK (success IN (0, 1))
);
CREATE INDEX login_attempts_client_at ON login_attempts (client, at);
CREATE INDEX login_attempts_at ON login_attempts (at);

CREATE TABLE settings (
    key        TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
