-- When the claiming worker joined the run's channel: a claimed run that was
-- never joined within the claim lease goes back to `available` (its worker
-- died, or never got the claim reply); one that was joined is judged by its
-- lease (`last_heard_at`) instead.
ALTER TABLE runs ADD COLUMN joined_at BIGINT;
