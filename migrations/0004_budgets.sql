-- Budgets: a spending limit for a tenant, optionally narrowed to one API key
-- (the filter's hashed api_key_id) and/or one model. `period` windows are
-- calendar-aligned in the collector's configured UTC offset; 'total' never
-- resets. A hard budget puts its scope on the filter's deny list once spent
-- reaches the limit; a soft one only alerts.
CREATE TABLE budgets (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        TEXT        NOT NULL,
    api_key_id       TEXT,
    model            TEXT,
    amount           NUMERIC     NOT NULL CHECK (amount > 0),
    currency         TEXT        NOT NULL,
    period           TEXT        NOT NULL CHECK (period IN ('day', 'week', 'month', 'total')),
    hard             BOOLEAN     NOT NULL,
    alert_thresholds INTEGER[]   NOT NULL DEFAULT '{50,80,100}',
    webhook_url      TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX budgets_tenant ON budgets (tenant_id, id);
CREATE INDEX budgets_hard ON budgets (id) WHERE hard;

-- Prepaid credit ledger: append-only. Top-ups are positive, debits and
-- refunds negative; every row says why and who. A tenant's first credit
-- opens its prepaid account (hard stop at a zero balance from then on).
CREATE TABLE credits (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  TEXT        NOT NULL,
    amount     NUMERIC     NOT NULL CHECK (amount <> 0),
    currency   TEXT        NOT NULL,
    reason     TEXT        NOT NULL,
    created_by TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX credits_tenant ON credits (tenant_id, id);

CREATE FUNCTION credits_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the credit ledger is append-only; add a correcting entry instead';
END;
$$;

CREATE TRIGGER credits_append_only BEFORE UPDATE OR DELETE ON credits
    FOR EACH ROW EXECUTE FUNCTION credits_append_only();
