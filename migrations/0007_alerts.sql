-- Budget alerts and their webhook delivery log. The evaluator inserts one row
-- per (budget, period, event, threshold) with ON CONFLICT DO NOTHING, so each
-- threshold fires once per period however many collector replicas evaluate.
-- `threshold` is the percentage for threshold_crossed / budget_exceeded and 0
-- for projected_to_exceed (a NULL would not take part in the unique key).
-- The deliverer POSTs pending rows to `webhook_url` (copied from the budget
-- when the alert fires) and retries failures with exponential backoff.
CREATE TABLE alerts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    budget_id       BIGINT      NOT NULL,
    tenant_id       TEXT        NOT NULL,
    api_key_id      TEXT,
    event           TEXT        NOT NULL
        CHECK (event IN ('threshold_crossed', 'budget_exceeded', 'projected_to_exceed', 'low_balance')),
    threshold       INTEGER     NOT NULL,
    spent           NUMERIC     NOT NULL,
    amount          NUMERIC     NOT NULL,
    currency        TEXT        NOT NULL,
    period_start    TIMESTAMPTZ NOT NULL,
    resets_at       TIMESTAMPTZ,
    webhook_url     TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (budget_id, period_start, event, threshold)
);

CREATE INDEX alerts_pending ON alerts (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX alerts_tenant ON alerts (tenant_id, id);
