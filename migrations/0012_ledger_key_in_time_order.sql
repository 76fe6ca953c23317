-- 1. invoice_items named a ledger row by (tenant, request id), but since
-- 0006 a reused x-request-id is a new row (the key includes the start
-- time): finalizing a period with two such rows failed on this key, and a
-- reuse after finalization counted as already billed. Items now carry the
-- row's start time. An old item becomes one item per row of its request id
-- (what the old invoices aggregated).
ALTER TABLE invoice_items DROP CONSTRAINT invoice_items_pkey;
ALTER TABLE invoice_items ADD COLUMN occurred_at TIMESTAMPTZ;
INSERT INTO invoice_items (tenant_id, request_id, occurred_at, invoice_id)
SELECT i.tenant_id, i.request_id, t.occurred_at, i.invoice_id
FROM invoice_items i JOIN transactions t USING (tenant_id, request_id)
WHERE i.occurred_at IS NULL;
DELETE FROM invoice_items WHERE occurred_at IS NULL;
ALTER TABLE invoice_items ALTER COLUMN occurred_at SET NOT NULL;
ALTER TABLE invoice_items ADD PRIMARY KEY (tenant_id, occurred_at, request_id);

-- 2. The ledger key in (tenant, time, request id) order: one index serves
-- deduplication (ON CONFLICT infers it from the same three columns),
-- a tenant's pages and time ranges (read backwards for newest first), so
-- transactions_tenant_time goes (~50 bytes a row). New rows also land at
-- the end of their tenant's range instead of at a random request id.
-- On a large ledger this rebuilds the key under a write lock: plan the
-- migration for a quiet time (the filter buffers and retries meanwhile).
ALTER TABLE transactions DROP CONSTRAINT transactions_pkey;
DROP INDEX transactions_tenant_time;
ALTER TABLE transactions ADD PRIMARY KEY (tenant_id, occurred_at, request_id);
