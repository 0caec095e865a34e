-- Whether a claimed or started run took a concurrency slot (bumped the
-- counters of its workflow and project). Only runs with a limit in their
-- scope do: the counters are shared rows every claim and every finish
-- would otherwise update, and on PostgreSQL each update holds the row
-- until its commit's WAL flush, which serialised the whole queue. Runs
-- active before this migration all took one.
ALTER TABLE runs ADD COLUMN holds_slot INTEGER NOT NULL DEFAULT 1;
