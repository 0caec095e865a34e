-- gabbro's data model, as Lightning's (reference/openfn-lightning.md §1).
-- One source of truth for both databases: this SQL is portable between
-- SQLite and PostgreSQL. Conventions:
--   ids         TEXT holding UUIDs (runs, steps and dataclips may carry ids
--               chosen by the worker, stored as given)
--   timestamps  BIGINT microseconds since the Unix epoch
--   JSON        TEXT (bodies are passed through, never re-encoded)
--   booleans    BOOLEAN

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    concurrency INTEGER,                 -- NULL = unlimited
    retention_policy TEXT NOT NULL DEFAULT 'retain_all',
    history_retention_period INTEGER,    -- days
    dataclip_retention_period INTEGER,   -- days
    retry_lost_runs BOOLEAN NOT NULL DEFAULT FALSE,
    inserted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    concurrency INTEGER,                 -- NULL = the project's limit
    lock_version INTEGER NOT NULL DEFAULT 0,
    deleted_at BIGINT,
    inserted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    schema TEXT NOT NULL DEFAULT 'raw',
    body_encrypted TEXT NOT NULL,        -- base64(nonce || AES-256-GCM ciphertext) of the JSON body
    inserted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id),
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    adaptor TEXT NOT NULL DEFAULT '@openfn/language-common@latest',
    credential_id TEXT REFERENCES credentials(id),
    inserted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (workflow_id, name)
);

CREATE TABLE triggers (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id),
    type TEXT NOT NULL,                  -- webhook | cron
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    custom_path TEXT UNIQUE,             -- webhook: POST /i/<custom_path>
    cron_expression TEXT,                -- cron: standard 5 fields
    auth_type TEXT,                      -- webhook auth: NULL | api | basic
    auth_username TEXT,
    auth_secret_encrypted TEXT,          -- api key or basic password, encrypted like credentials
    inserted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE edges (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id),
    source_job_id TEXT REFERENCES jobs(id),
    source_trigger_id TEXT REFERENCES triggers(id),
    target_job_id TEXT NOT NULL REFERENCES jobs(id),
    condition_type TEXT NOT NULL DEFAULT 'always', -- always | on_job_success | on_job_failure | js_expression
    condition_expression TEXT,
    condition_label TEXT,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    inserted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Immutable copies of a workflow (jobs, triggers, edges as JSON); every work
-- order, run and step points at the snapshot it executed.
CREATE TABLE workflow_snapshots (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id),
    lock_version INTEGER NOT NULL,
    body TEXT NOT NULL,
    inserted_at BIGINT NOT NULL,
    UNIQUE (workflow_id, lock_version)
);

CREATE TABLE dataclips (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    type TEXT NOT NULL,                  -- http_request | global | step_result | saved_input
    body TEXT,                           -- NULL once wiped
    request TEXT,                        -- http_request: {method, path, query_params, headers}
    wiped_at BIGINT,
    inserted_at BIGINT NOT NULL
);

CREATE TABLE work_orders (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id),
    snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
    trigger_id TEXT REFERENCES triggers(id),
    dataclip_id TEXT REFERENCES dataclips(id),
    state TEXT NOT NULL,                 -- pending | running | rejected | final run states
    idempotency_key TEXT,                -- webhook Idempotency-Key header (gabbro extension)
    last_activity BIGINT NOT NULL,
    inserted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX work_orders_idempotency ON work_orders (trigger_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX work_orders_workflow_inserted ON work_orders (workflow_id, inserted_at DESC, id);
CREATE INDEX work_orders_inserted ON work_orders (inserted_at DESC, id);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    work_order_id TEXT NOT NULL REFERENCES work_orders(id),
    workflow_id TEXT NOT NULL,           -- denormalised for the queue's concurrency limits
    project_id TEXT NOT NULL,
    snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
    starting_job_id TEXT,
    starting_trigger_id TEXT,
    dataclip_id TEXT REFERENCES dataclips(id),
    state TEXT NOT NULL,                 -- available | claimed | started | success | failed | crashed | cancelled | killed | exception | lost
    error_type TEXT,
    queue TEXT NOT NULL DEFAULT 'default', -- manual | fast_lane | default
    priority INTEGER NOT NULL DEFAULT 1, -- 0 immediate, 1 normal
    options TEXT NOT NULL DEFAULT '{}',  -- RunOptions frozen at creation (run_timeout_ms, run_memory_limit_mb, save_dataclips, ...)
    worker_name TEXT,
    worker_id TEXT,                      -- worker token's worker_id of the claimer (lease holder)
    claim_epoch INTEGER NOT NULL DEFAULT 0, -- bumped on every claim; a requeued run's old claim is refused
    last_heard_at BIGINT,                -- lease: when the orchestrator last heard from the holder
    created_by TEXT,
    claimed_at BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    inserted_at BIGINT NOT NULL
);
CREATE INDEX runs_work_order ON runs (work_order_id, inserted_at);
-- The queue: only unfinished runs are indexed, so finished runs never slow a claim.
CREATE INDEX runs_available ON runs (priority, inserted_at, id) WHERE state = 'available';
CREATE INDEX runs_active ON runs (state, claimed_at) WHERE state IN ('claimed', 'started');

CREATE TABLE steps (
    id TEXT PRIMARY KEY,                 -- chosen by the worker
    job_id TEXT NOT NULL,
    snapshot_id TEXT,
    credential_id TEXT,
    input_dataclip_id TEXT,
    output_dataclip_id TEXT,
    exit_reason TEXT,                    -- success | fail | crash | kill | exception | cancel | lost
    error_type TEXT,
    error_message TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    inserted_at BIGINT NOT NULL
);

-- Runs and steps are many-to-many: a retry reuses the steps upstream of its start.
CREATE TABLE run_steps (
    run_id TEXT NOT NULL REFERENCES runs(id),
    step_id TEXT NOT NULL REFERENCES steps(id),
    position INTEGER NOT NULL,           -- execution order within the run
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE log_lines (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    step_id TEXT,
    seq INTEGER,                         -- gabbro worker's per-run event sequence (idempotency key)
    level TEXT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL,
    timestamp BIGINT NOT NULL
);
CREATE INDEX log_lines_run ON log_lines (run_id, timestamp, id);
CREATE UNIQUE INDEX log_lines_run_seq ON log_lines (run_id, seq) WHERE seq IS NOT NULL;

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,         -- argon2
    role TEXT NOT NULL DEFAULT 'user',   -- superuser | user
    must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
    inserted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE project_users (
    project_id TEXT NOT NULL REFERENCES projects(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,                  -- owner | admin | editor | viewer
    PRIMARY KEY (project_id, user_id)
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    token_hash TEXT NOT NULL UNIQUE,     -- SHA-256 of the bearer token; the token itself is never stored
    inserted_at BIGINT NOT NULL,
    last_used_at BIGINT
);

-- Cron: one row per (trigger, scheduled time) makes each fire exactly once,
-- across restarts and nodes, without a leader.
CREATE TABLE cron_fires (
    trigger_id TEXT NOT NULL REFERENCES triggers(id),
    scheduled_at BIGINT NOT NULL,
    work_order_id TEXT,                  -- NULL when the fire was missed (reported, not run)
    outcome TEXT NOT NULL,               -- fired | missed
    inserted_at BIGINT NOT NULL,
    PRIMARY KEY (trigger_id, scheduled_at)
);
