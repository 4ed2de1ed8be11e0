-- Dashboard sign-in sessions. The browser holds a random session id in an HttpOnly cookie;
-- only its SHA-256 is stored here. A session dies with its API key, at expires_at, or on
-- sign-out. csrf_token is sent back by the page in X-CSRF-Token on every change.
CREATE TABLE web_sessions (
    id_hash TEXT PRIMARY KEY,
    api_key_id TEXT NOT NULL REFERENCES api_keys(id),
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_key ON web_sessions (api_key_id);
