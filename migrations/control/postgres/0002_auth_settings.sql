-- The master password (one row), sessions, login attempts (throttling that
-- holds across replicas) and runtime settings. Times are Unix seconds.
CREATE TABLE admin_password (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    phc        TEXT    NOT NULL CHECK (phc LIKE '$argon2id$%'),
    updated_at BIGINT  NOT NULL
);

-- Only the SHA-256 of a token is stored, never the token.
CREATE TABLE sessions (
    token_sha256 BYTEA  PRIMARY KEY CHECK (length(token_sha256) = 32),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    client       TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE login_attempts (
    id      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT  NOT NULL,
    client  TEXT    NOT NULL,
    success BOOLEAN NOT NULL
);
CREATE INDEX login_attempts_client_at ON login_attempts (client, at);
CREATE INDEX login_attempts_at ON login_attempts (at);

CREATE TABLE settings (
    key        TEXT   PRIMARY KEY,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
