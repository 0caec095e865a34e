-- The queue's concurrency counters and indexes for claim and the ledger.
-- Portable between SQLite and PostgreSQL, like 0001.

-- Runs in claimed|started per workflow ('w:<id>') and per project
-- ('p:<id>'). Claim checks and bumps these instead of counting active runs,
-- so its cost does not grow with the queue; every move out of
-- claimed|started (run:complete, janitor, rollback) decrements them in the
-- same transaction.
CREATE TABLE concurrency_counters (
    scope TEXT PRIMARY KEY,
    active INTEGER NOT NULL DEFAULT 0
);

-- Claim looks at the head of each (workflow, queue): one index probe per
-- pair, however deep the queue and however blocked a workflow is.
CREATE INDEX runs_available_head ON runs (workflow_id, queue, priority, inserted_at, id)
    WHERE state = 'available';

-- Steps of a run in order, and the run of a step.
CREATE INDEX run_steps_step ON run_steps (step_id);
CREATE INDEX run_steps_run_position ON run_steps (run_id, position);

-- Work-order listing by state.
CREATE INDEX work_orders_state_inserted ON work_orders (state, inserted_at DESC, id);

-- Keyset pages over log lines of a run, in order.
CREATE INDEX log_lines_run_seq_order ON log_lines (run_id, seq);

-- The ledger's per-run event sequence (gabbro worker's `seq`): the last one
-- applied. Events with seq ≤ last_seq are replays (answered ok, changing
-- nothing); seq > last_seq + 1 is a gap (refused, naming the expected seq).
ALTER TABLE runs ADD COLUMN last_seq BIGINT;

-- A `run:batch_logs` event carries one seq for many lines, so (run, seq) is
-- not unique on log lines; the ledger's idempotency is `runs.last_seq`.
DROP INDEX log_lines_run_seq;
