-- Text search over work orders' input dataclips for the UI's history page
-- (crates/ui/src/search.rs). An inverted index of words, filled
-- asynchronously by the UI's indexer so webhook ingest never waits for it.
CREATE TABLE ui_search_terms (
    term TEXT NOT NULL,                  -- a lower-cased word of the input
    inserted_at BIGINT NOT NULL,         -- the work order's inserted_at
    work_order_id TEXT NOT NULL
);
-- Same order as the history page (newest first, then id), so a search reads
-- one page of its term and stops.
CREATE INDEX ui_search_terms_order ON ui_search_terms (term, inserted_at DESC, work_order_id);

-- How far the indexer has got: every work order at or before this
-- (inserted_at, id) position in its scan has its words in ui_search_terms.
CREATE TABLE ui_search_progress (
    id INTEGER PRIMARY KEY,              -- always 1
    inserted_at BIGINT NOT NULL,
    work_order_id TEXT NOT NULL
);
