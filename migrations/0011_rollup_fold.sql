-- The daily rollups leave the ingest path: a batch upserts only the hourly
-- rollup (three upserts per batch had cut ingest by a third, and every
-- batch queued on the same tenant-day rows), and a periodic fold adds
-- closed hours to the daily tables.
--
-- Invariant: usage_daily and usage_tenant_daily hold exactly the usage of
-- the hourly groups with hour < folded_before, nothing later. A summary
-- reads whole days from them and the hours since folded_before from
-- usage_hourly. A row that arrives late (its hour already folded) is added
-- to the daily tables too, in its own batch statement. The fold and the
-- writers exclude each other with an advisory lock (shared for writers,
-- exclusive for the fold), so no row is folded twice or missed.
--
-- Rollout: as for 0009, stop collectors older than this migration before
-- new ones run it (an old one would keep adding every row to the daily
-- tables, and the fold would add the same rows again).
CREATE TABLE rollup_fold (
    singleton     BOOLEAN     PRIMARY KEY DEFAULT true CHECK (singleton),
    folded_before TIMESTAMPTZ NOT NULL
);

-- Until now every row went to the daily tables as it was written. Start
-- the watermark at the current hour: today's daily rows are rebuilt from
-- the hours before it, and the current hour is left to the fold.
INSERT INTO rollup_fold (folded_before) VALUES (date_trunc('hour', now(), 'UTC'));

DELETE FROM usage_daily WHERE day >= (now() AT TIME ZONE 'UTC')::date;
DELETE FROM usage_tenant_daily WHERE day >= (now() AT TIME ZONE 'UTC')::date;

INSERT INTO usage_daily (tenant_id, day, api_key_id, provider, model, status, currency,
    requests, error_requests, incomplete_requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost)
SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date, api_key_id, provider, model, status, currency,
    sum(requests), sum(error_requests), sum(incomplete_requests), sum(input_tokens),
    sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens),
    sum(cost), sum(reported_cost)
FROM usage_hourly
WHERE hour >= date_trunc('day', now(), 'UTC') AND hour < date_trunc('hour', now(), 'UTC')
GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING sum(requests) <> 0;

INSERT INTO usage_tenant_daily (tenant_id, day, status, currency,
    requests, error_requests, incomplete_requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost)
SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date, status, currency,
    sum(requests), sum(error_requests), sum(incomplete_requests), sum(input_tokens),
    sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens),
    sum(cost), sum(reported_cost)
FROM usage_hourly
WHERE hour >= date_trunc('day', now(), 'UTC') AND hour < date_trunc('hour', now(), 'UTC')
GROUP BY 1, 2, 3, 4 HAVING sum(requests) <> 0;

-- The fold reads usage_hourly by hour through usage_hourly_time (0001).
