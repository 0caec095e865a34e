-- `runs_available` (priority, inserted_at, id) misled PostgreSQL's planner:
-- for the claim's per-workflow head lookup (workflow_id = ? AND queue = ?,
-- ORDER BY priority, inserted_at, id LIMIT 1) with a generic plan it walked
-- this index in order and filtered, reading every available run of every
-- other queue and workflow — 1.5 ms per empty queue at 3,000 queued, so the
-- claim slowed with the backlog. `runs_available_head` serves that lookup;
-- what remains of this index's use is the queue dashboard's oldest
-- available run, by age alone.
DROP INDEX runs_available;
CREATE INDEX runs_available_age ON runs (inserted_at, id) WHERE state = 'available';
