-- Per-budget time zone (an IANA name, validated by the collector); NULL: the
-- collector's default (BUDGET_TIME_ZONE).
ALTER TABLE budgets ADD COLUMN time_zone TEXT;

-- Low-balance alerts of prepaid tenants: one configuration per tenant, in
-- its account's currency. The evaluator keeps, per event, whether the alert
-- is armed: `*_fired_at` is set when it fires (disarmed) and cleared when the
-- balance recovers (re-armed at `*_armed_at`). Both changes are conditional
-- UPDATEs guarded by the time the balance was read, so replicas with stale
-- readings can neither fire twice nor re-arm early.
CREATE TABLE balance_alerts (
    tenant_id            TEXT PRIMARY KEY,
    threshold            NUMERIC     NOT NULL CHECK (threshold > 0),
    currency             TEXT        NOT NULL,
    webhook_url          TEXT,
    low_fired_at         TIMESTAMPTZ,
    low_armed_at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    exhausted_fired_at   TIMESTAMPTZ,
    exhausted_armed_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Balance alerts share the delivery log: no budget, `amount` is the
-- threshold, `balance` what was left, `period_start` when the balance fell.
ALTER TABLE alerts ALTER COLUMN budget_id DROP NOT NULL;
ALTER TABLE alerts ADD COLUMN balance NUMERIC;
ALTER TABLE alerts DROP CONSTRAINT alerts_event_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_event_check CHECK (event IN
    ('threshold_crossed', 'budget_exceeded', 'projected_to_exceed', 'low_balance',
     'balance_exhausted'));
ALTER TABLE alerts ADD CONSTRAINT alerts_budget_or_balance CHECK
    ((budget_id IS NULL) = (event IN ('low_balance', 'balance_exhausted')));
-- Once per fall below the threshold, whatever the number of replicas.
CREATE UNIQUE INDEX alerts_balance_once ON alerts (tenant_id, event, period_start)
    WHERE budget_id IS NULL;
