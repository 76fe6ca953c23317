-- Price catalog: immutable, versioned rows. A transaction references the row
-- it was charged at, so the price used is always recoverable.
CREATE TABLE price_catalog (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model          TEXT        NOT NULL,
    effective_from TIMESTAMPTZ NOT NULL,
    entry          JSONB       NOT NULL,
    source         TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (model, effective_from)
);

-- The ledger. Keyed by tenant first so it can be distributed by tenant
-- (Citus) and deduplicated on the request id within it.
CREATE TABLE transactions (
    tenant_id             TEXT        NOT NULL,
    request_id            TEXT        NOT NULL,
    id                    BIGINT GENERATED ALWAYS AS IDENTITY,
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
    PRIMARY KEY (tenant_id, request_id)
);

CREATE INDEX transactions_tenant_time ON transactions (tenant_id, occurred_at DESC, id DESC);
CREATE INDEX transactions_time ON transactions (occurred_at DESC, id DESC);
CREATE INDEX transactions_unpriced ON transactions (model) WHERE status = 'unpriced';

-- Hourly rollup maintained in the same transaction as the ledger insert,
-- from the rows actually inserted, so duplicates never count twice.
CREATE TABLE usage_hourly (
    tenant_id             TEXT        NOT NULL,
    hour                  TIMESTAMPTZ NOT NULL,
    api_key_id            TEXT        NOT NULL,
    provider              TEXT        NOT NULL,
    model                 TEXT        NOT NULL,
    status                TEXT        NOT NULL,
    currency              TEXT        NOT NULL,
    requests              BIGINT      NOT NULL,
    error_requests        BIGINT      NOT NULL,
    incomplete_requests   BIGINT      NOT NULL,
    input_tokens          BIGINT      NOT NULL,
    output_tokens         BIGINT      NOT NULL,
    cache_read_tokens     BIGINT      NOT NULL,
    cache_write_tokens    BIGINT      NOT NULL,
    reasoning_tokens      BIGINT      NOT NULL,
    cost                  NUMERIC     NOT NULL,
    reported_cost         NUMERIC     NOT NULL,
    PRIMARY KEY (tenant_id, hour, api_key_id, provider, model, status, currency)
);

CREATE INDEX usage_hourly_time ON usage_hourly (hour);
