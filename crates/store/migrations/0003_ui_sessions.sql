-- Web UI sessions (crates/ui). The cookie carries a random token; only its
-- SHA-256 is stored, so a leaked database does not leak live sessions. Each
-- session has its own CSRF token, echoed in every form.
CREATE TABLE ui_sessions (
    id TEXT PRIMARY KEY,                 -- hex SHA-256 of the cookie's token
    user_id TEXT NOT NULL REFERENCES users(id),
    csrf_token TEXT NOT NULL,
    inserted_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_user ON ui_sessions (user_id);

-- The queue dashboard counts runs finished in the last hour; without this the
-- count would scan every run ever made.
CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL;
