-- Daily rollups, kept in the same statement as the ledger insert (and moved
-- by repricing) exactly like usage_hourly. A summary reads whole UTC days
-- here, whole hours at its edges from usage_hourly and the sub-hour edges
-- from the ledger, so every range stays exact while a 30-day query reads
-- ~30 rows per group instead of ~720 (or one per request).
--
-- Rollout: a collector older than this migration keeps usage_hourly but not
-- these tables, so stop old replicas before new ones migrate (the filter
-- buffers and retries meanwhile); rows an old replica writes afterwards are
-- missing here until the two INSERTs below are re-run on empty tables.
--
-- Fixed-width columns first: no alignment padding between the texts and
-- the BIGINTs.
CREATE TABLE usage_daily (
    requests            BIGINT  NOT NULL,
    error_requests      BIGINT  NOT NULL,
    incomplete_requests BIGINT  NOT NULL,
    input_tokens        BIGINT  NOT NULL,
    output_tokens       BIGINT  NOT NULL,
    cache_read_tokens   BIGINT  NOT NULL,
    cache_write_tokens  BIGINT  NOT NULL,
    reasoning_tokens    BIGINT  NOT NULL,
    day                 DATE    NOT NULL,
    tenant_id           TEXT    NOT NULL,
    api_key_id          TEXT    NOT NULL,
    provider            TEXT    NOT NULL,
    model               TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    cost                NUMERIC NOT NULL,
    reported_cost       NUMERIC NOT NULL,
    PRIMARY KEY (tenant_id, day, api_key_id, provider, model, status, currency)
);

-- One row per tenant, day, status and currency: what the all-tenant report
-- and unfiltered totals need, ~1,000 rows a day rather than one per model
-- and key.
CREATE TABLE usage_tenant_daily (
    requests            BIGINT  NOT NULL,
    error_requests      BIGINT  NOT NULL,
    incomplete_requests BIGINT  NOT NULL,
    input_tokens        BIGINT  NOT NULL,
    output_tokens       BIGINT  NOT NULL,
    cache_read_tokens   BIGINT  NOT NULL,
    cache_write_tokens  BIGINT  NOT NULL,
    reasoning_tokens    BIGINT  NOT NULL,
    day                 DATE    NOT NULL,
    tenant_id           TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    cost                NUMERIC NOT NULL,
    reported_cost       NUMERIC NOT NULL,
    PRIMARY KEY (tenant_id, day, status, currency)
);

CREATE INDEX usage_tenant_daily_day ON usage_tenant_daily (day);

-- Backfill from the hourly rollup, which is exact and already aggregated.
INSERT INTO usage_daily (tenant_id, day, api_key_id, provider, model, status, currency,
    requests, error_requests, incomplete_requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost)
SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date, api_key_id, provider, model, status, currency,
    sum(requests), sum(error_requests), sum(incomplete_requests), sum(input_tokens),
    sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens),
    sum(cost), sum(reported_cost)
FROM usage_hourly GROUP BY 1, 2, 3, 4, 5, 6, 7;

INSERT INTO usage_tenant_daily (tenant_id, day, status, currency,
    requests, error_requests, incomplete_requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost)
SELECT tenant_id, day, status, currency,
    sum(requests), sum(error_requests), sum(incomplete_requests), sum(input_tokens),
    sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens),
    sum(cost), sum(reported_cost)
FROM usage_daily GROUP BY 1, 2, 3, 4;
