-- A ledger row is one request: (tenant, x-request-id, start time). The
-- filter resends a record byte for byte, so its retries still collide and
-- are deduplicated, but a client that reuses an x-request-id for another
-- request no longer loses that request's billing. The time in the key also
-- lets the table be partitioned by occurred_at later.
ALTER TABLE transactions DROP CONSTRAINT transactions_pkey;
ALTER TABLE transactions ADD PRIMARY KEY (tenant_id, request_id, occurred_at);
