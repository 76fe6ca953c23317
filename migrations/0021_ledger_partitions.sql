-- The ledger partitioned by month of occurred_at (UTC calendar months), so
-- an old month can be exported, detached and dropped in one step instead of
-- a DELETE of millions of rows, and a month's reads touch only its own
-- partition. The key still leads with tenant_id (the future Citus
-- distribution column) and includes occurred_at, as every unique key of a
-- partitioned table must.
--
-- Partitions are named transactions_pYYYYMM and created by
-- ledger_ensure_partition: ahead of time by the collector (this month and
-- the next ones), and in the ingest transaction itself for a record whose
-- month has none yet (a late retry, an old backfill), so no record is ever
-- refused for want of a partition.
--
-- The global row id (BIGINT identity) is dropped: nothing reads it since the
-- cursors and invoice items name rows by their key, and an identity column
-- on a partitioned table is a single sequence shared by every replica.
--
-- Rollout: the rows are copied into the new table in this transaction; on a
-- large ledger that takes a while under a write lock (the filter buffers and
-- retries meanwhile), see docs/operations.md.

ALTER TABLE transactions RENAME TO transactions_unpartitioned;
ALTER TABLE transactions_unpartitioned RENAME CONSTRAINT transactions_pkey
    TO transactions_unpartitioned_pkey;
ALTER INDEX transactions_time_brin RENAME TO transactions_unpartitioned_time_brin;
ALTER INDEX transactions_unpriced RENAME TO transactions_unpartitioned_unpriced;

CREATE TABLE transactions (
    tenant_id             TEXT        NOT NULL,
    request_id            TEXT        NOT NULL,
    occurred_at           TIMESTAMPTZ NOT NULL,
    received_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    api_key_id            TEXT,
    provider              TEXT        NOT NULL,
    model                 TEXT,
    route                 TEXT,
    http_status           INTEGER     NOT NULL,
    streamed              BOOLEAN     NOT NULL,
    ttfb_ms               BIGINT,
    duration_ms           BIGINT,
    input_tokens          BIGINT      NOT NULL,
    output_tokens         BIGINT      NOT NULL,
    cache_read_tokens     BIGINT      NOT NULL,
    cache_write_tokens    BIGINT      NOT NULL,
    cache_write_1h_tokens BIGINT      NOT NULL,
    reasoning_tokens      BIGINT      NOT NULL,
    status                TEXT        NOT NULL CHECK (status IN ('priced', 'unpriced')),
    currency              TEXT,
    cost                  NUMERIC,
    cost_input            NUMERIC,
    cost_cache_read       NUMERIC,
    cost_cache_write      NUMERIC,
    cost_output           NUMERIC,
    cost_reasoning        NUMERIC,
    cost_request_fee      NUMERIC,
    cost_discount         NUMERIC,
    price_id              BIGINT REFERENCES price_catalog (id),
    price_version         TEXT,
    reported_cost         NUMERIC,
    flags                 TEXT[]      NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, occurred_at, request_id)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX transactions_time_brin ON transactions USING brin (occurred_at)
    WITH (pages_per_range = 32, autosummarize = off);
CREATE INDEX transactions_unpriced ON transactions (model) WHERE status = 'unpriced';

-- The partition of the UTC month holding `at`, created if missing; returns
-- its name. Concurrent callers (replicas, batches) serialize on an advisory
-- lock, so two never race to create the same one.
CREATE FUNCTION ledger_ensure_partition(at TIMESTAMPTZ) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    month_start TIMESTAMPTZ := date_trunc('month', at, 'UTC');
    name TEXT := 'transactions_p' || to_char(month_start AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ledger_ensure_partition'));
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF transactions FOR VALUES FROM (%L) TO (%L)',
            name,
            to_char(month_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'),
            to_char((month_start AT TIME ZONE 'UTC') + interval '1 month',
                'YYYY-MM-DD"T"HH24:MI:SS"+00"'));
    END IF;
    RETURN name;
END $$;

SELECT ledger_ensure_partition(m)
FROM (
    SELECT DISTINCT date_trunc('month', occurred_at, 'UTC') AS m FROM transactions_unpartitioned
    UNION SELECT date_trunc('month', now(), 'UTC')
    UNION SELECT date_trunc('month', now(), 'UTC') + interval '1 month'
) months
ORDER BY m;

INSERT INTO transactions (tenant_id, request_id, occurred_at, received_at, api_key_id, provider,
    model, route, http_status, streamed, ttfb_ms, duration_ms, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, status,
    currency, cost, cost_input, cost_cache_read, cost_cache_write, cost_output, cost_reasoning,
    cost_request_fee, cost_discount, price_id, price_version, reported_cost, flags)
SELECT tenant_id, request_id, occurred_at, received_at, api_key_id, provider,
    model, route, http_status, streamed, ttfb_ms, duration_ms, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, status,
    currency, cost, cost_input, cost_cache_read, cost_cache_write, cost_output, cost_reasoning,
    cost_request_fee, cost_discount, price_id, price_version, reported_cost, flags
FROM transactions_unpartitioned
ORDER BY occurred_at;

DO $$
BEGIN
    IF (SELECT count(*) FROM transactions) <> (SELECT count(*) FROM transactions_unpartitioned) THEN
        RAISE EXCEPTION 'ledger partitioning: row counts differ after the copy';
    END IF;
END $$;

DROP TABLE transactions_unpartitioned;
