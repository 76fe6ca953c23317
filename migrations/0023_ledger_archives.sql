-- Months of the ledger archived out of PostgreSQL (`collector ledger
-- archive`): exported to a file, checked against the partition's row count
-- and sums, then detached and dropped, all recorded here in the same
-- transaction. Summaries read this to say that a range's rows are archived
-- and that its figures come from the daily rollups (whole UTC days).
CREATE TABLE ledger_archives (
    month        TIMESTAMPTZ NOT NULL,  -- first instant of the UTC month
    archived_at  TIMESTAMPTZ NOT NULL,
    rows         BIGINT      NOT NULL,
    -- {"USD": "12.345", ...}: priced cost per currency of the archived rows
    cost         JSONB       NOT NULL,
    format       TEXT        NOT NULL,
    file         TEXT        NOT NULL,
    file_sha256  TEXT        NOT NULL,
    -- Late rows of an archived month recreate its partition; archiving it
    -- again adds a second entry with their file.
    PRIMARY KEY (month, archived_at)
);
