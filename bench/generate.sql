-- Loads :n synthetic transactions and their rollups (hourly, daily,
-- tenant-day, fold watermark) into the real schema (the collector has run the migrations),
-- for the query benchmark.
--   psql -v n=10000000 -f bench/generate.sql
-- Shape: 90 days ending now; 1,000 tenants with a steep skew (the heaviest
-- tenant has ~10% of the traffic, hundreds of tenants a few hundred rows);
-- 50 models (skewed to a few), 4 API keys per tenant, Envoy UUID request
-- ids, 40% streamed, 3% errors. Indexes and keys are dropped during the load
-- and rebuilt from their exact definitions afterwards.
\set ON_ERROR_STOP 1
SET maintenance_work_mem = '512MB';
SET work_mem = '256MB';
SET synchronous_commit = off;
\timing on

DROP TABLE IF EXISTS bench_meta;
TRUNCATE transactions, usage_hourly, usage_daily, usage_tenant_daily;
-- The ledger's monthly partitions for the 90 days (and the next month).
SELECT ledger_ensure_partition(m)
FROM generate_series(date_trunc('month', now() - interval '91 days', 'UTC'),
    now() + interval '1 month', interval '1 month') AS m;

CREATE TEMP TABLE saved_constraints AS
  SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
  FROM pg_constraint
  WHERE conrelid IN ('transactions'::regclass, 'usage_hourly'::regclass,
      'usage_daily'::regclass, 'usage_tenant_daily'::regclass) AND contype IN ('p', 'u');
CREATE TEMP TABLE saved_indexes AS
  SELECT indexname, indexdef FROM pg_indexes
  WHERE schemaname = 'public'
    AND tablename IN ('transactions', 'usage_hourly', 'usage_daily', 'usage_tenant_daily')
    AND indexname NOT IN (SELECT conname FROM saved_constraints);
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM saved_indexes LOOP
    EXECUTE format('DROP INDEX %I', r.indexname);
  END LOOP;
  FOR r IN SELECT * FROM saved_constraints LOOP
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
  END LOOP;
END $$;

SELECT min(id) AS price_id FROM price_catalog \gset
SELECT setseed(0.42);

INSERT INTO transactions (tenant_id, request_id, occurred_at, received_at, api_key_id, provider,
    model, route, http_status, streamed, ttfb_ms, duration_ms, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, status,
    currency, cost, cost_input, cost_cache_read, cost_cache_write, cost_output, cost_reasoning,
    cost_request_fee, cost_discount, price_id, price_version, reported_cost, flags)
SELECT tenant, request_id, at, at + duration * interval '1 ms' + interval '1200 ms', api_key,
    provider, model, 'llm_api', http_status, streamed, ttfb, duration, input, output, cache_read,
    0, 0, reasoning, 'priced', 'USD',
    c_in + c_cache + c_out, c_in, c_cache, 0, c_out, 0, 0, 0,
    :price_id, model || '@2025-01-01T00:00:00Z',
    CASE WHEN provider = 'openrouter' THEN c_in + c_cache + c_out END,
    CASE WHEN streamed AND r6 < 0.01 THEN '{incomplete}'::text[] ELSE '{}'::text[] END
FROM (
  SELECT *, (input - cache_read) * pin AS c_in, cache_read * pin / 10 AS c_cache,
      output * pin * 4 AS c_out
  FROM (
    SELECT *, CASE WHEN r3 < 0.3 THEN input / 2 ELSE 0 END AS cache_read,
        CASE WHEN m % 5 = 0 THEN output / 3 ELSE 0 END AS reasoning
    FROM (
      SELECT *, CASE WHEN http_status = 200 THEN floor(200 + 4000 * r3 * r3)::int8 ELSE 0 END AS input,
          CASE WHEN http_status = 200 THEN floor(20 + 1500 * r4)::int8 ELSE 0 END AS output,
          (ARRAY['openai', 'anthropic', 'gemini', 'openrouter'])[m % 4 + 1] AS provider,
          (ARRAY['openai', 'anthropic', 'gemini', 'openrouter'])[m % 4 + 1] || '-model-' || m
            || '-2025-' || lpad((m % 12 + 1)::text, 2, '0') AS model,
          (0.15 + m * 0.05) / 1000000 AS pin
      FROM (
        SELECT g,
            'tenant-' || lpad(tenant_n::text, 4, '0') AS tenant,
            lpad(to_hex(tenant_n * 16 + floor(r5 * 4)::int), 10, '0') AS api_key,
            gen_random_uuid()::text AS request_id,
            now() - interval '90 days' + (g::float8 / :n) * interval '90 days' AS at,
            floor(50 * power(r7, 2))::int AS m,
            CASE WHEN r2 < 0.02 THEN 429 WHEN r2 < 0.03 THEN 500 ELSE 200 END AS http_status,
            r2 < 0.43 AND r2 >= 0.03 AS streamed,
            100 + floor(900 * r5)::int8 AS ttfb,
            100 + floor(900 * r5)::int8 + floor(8000 * r6)::int8 AS duration,
            r3, r4, r6
        FROM (
          SELECT g, floor(1000 * power(random(), 3))::int AS tenant_n, random() AS r2,
              random() AS r3, random() AS r4, random() AS r5, random() AS r6, random() AS r7
          FROM generate_series(1, :n) g
        ) a
      ) b
    ) c
  ) d
) e;

-- The rollups exactly as the collector maintains them (db/ledger.rs ROLLUPS):
-- the daily ones summed from the hourly one, as migration 0009 backfills.
INSERT INTO usage_hourly (tenant_id, hour, api_key_id, provider, model, status, currency,
    requests, error_requests, incomplete_requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost)
SELECT tenant_id, date_trunc('hour', occurred_at, 'UTC'), coalesce(api_key_id, ''), provider,
    coalesce(model, ''), status, coalesce(currency, ''),
    count(*), count(*) FILTER (WHERE http_status >= 400),
    count(*) FILTER (WHERE 'incomplete' = ANY(flags)),
    sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
    sum(reasoning_tokens), coalesce(sum(cost), 0), coalesce(sum(reported_cost), 0)
FROM transactions GROUP BY 1, 2, 3, 4, 5, 6, 7;

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

-- The daily rollups hold every hour generated (the data ends now); the
-- hourly one keeps the collector's default retention (7 days, migration
-- 0022), as the collector's hourly prune would leave it.
UPDATE rollup_fold SET folded_before = date_trunc('hour', now(), 'UTC') + interval '1 hour',
    hourly_from = date_trunc('hour', now() - interval '7 days', 'UTC');
DELETE FROM usage_hourly WHERE hour < (SELECT hourly_from FROM rollup_fold);

DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM saved_constraints LOOP
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', r.tbl, r.conname, r.def);
  END LOOP;
  -- A partitioned table's definition reads "ON ONLY" (the parent alone,
  -- left INVALID): build it on every partition.
  FOR r IN SELECT * FROM saved_indexes LOOP
    EXECUTE replace(r.indexdef, ' ON ONLY ', ' ON ');
  END LOOP;
END $$;

VACUUM ANALYZE transactions;
-- The pruned hours leave dead space that the collector's own pruning would
-- reuse for new hours; measure the steady state.
VACUUM (FULL, ANALYZE) usage_hourly;
VACUUM ANALYZE usage_daily;
VACUUM ANALYZE usage_tenant_daily;
CREATE TABLE bench_meta (n bigint NOT NULL, generated_at timestamptz NOT NULL);
INSERT INTO bench_meta SELECT count(*), max(occurred_at) FROM transactions;
