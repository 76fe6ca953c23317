-- Reservations against hard budgets and prepaid balances (POST
-- /v1/reservations): a request of a scope near its limit is admitted only if
-- its estimated cost fits in limit - spent - reserved, decided under a
-- per-tenant advisory lock. A row lives from admission until its usage
-- record lands in the ledger (deleted in the ledger insert's transaction)
-- or it expires (never counted after expires_at; swept periodically).
-- `bounded` = the request set an output limit, so `amount` is an upper
-- bound of its cost; an unbounded one may cost more (at most one such row is
-- active per governed scope). `rule` is the admission rule that applied
-- (`fits` or `one_over`), answered again on a repeated call. Times are the
-- collector's clock (collector/src/clock.rs).
CREATE TABLE budget_reservations (
    tenant_id  TEXT        NOT NULL,
    request_id TEXT        NOT NULL,
    api_key_id TEXT,
    amount     NUMERIC     NOT NULL CHECK (amount >= 0),
    currency   TEXT        NOT NULL,
    bounded    BOOLEAN     NOT NULL,
    rule       TEXT        NOT NULL CHECK (rule IN ('fits', 'one_over')),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
);

-- The sums per tenant and per tenant + key (active rows only).
CREATE INDEX budget_reservations_scope ON budget_reservations (tenant_id, api_key_id, expires_at)
    INCLUDE (amount, currency, bounded);
-- The sweep of expired rows.
CREATE INDEX budget_reservations_expiry ON budget_reservations (expires_at);
