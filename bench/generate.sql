-- Loads :n synthetic transactions and their rollups (hourly, daily,
-- tenant-day, fold watermark) into the real schema (the collector has run the
-- migrations, so this is the lean ledger of migration 0025: dictionary ids,
-- uuid request ids, one rate card per model), for the query benchmark.
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
TRUNCATE ledger, ledger_legacy_costs, rollup_hourly, rollup_daily, rollup_tenant_daily,
    ledger_tenants, ledger_api_keys, ledger_models, ledger_routes, ledger_rates,
    ledger_request_names;
-- The ledger's monthly partitions for the 90 days (and the next month).
SELECT ledger_ensure_partition(m)
FROM generate_series(date_trunc('month', now() - interval '91 days', 'UTC'),
    now() + interval '1 month', interval '1 month') AS m;

CREATE TEMP TABLE saved_constraints AS
  SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
  FROM pg_constraint
  WHERE conrelid IN ('ledger'::regclass, 'rollup_hourly'::regclass,
      'rollup_daily'::regclass, 'rollup_tenant_daily'::regclass) AND contype IN ('p', 'u');
CREATE TEMP TABLE saved_indexes AS
  SELECT indexname, indexdef FROM pg_indexes
  WHERE schemaname = 'public'
    AND tablename IN ('ledger', 'rollup_hourly', 'rollup_daily', 'rollup_tenant_daily')
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

-- Dictionaries with ids computed from the generator's numbers: tenant n is
-- id n + 1, its key k (0..3) id 4n + k + 1, model m id m + 1 with its rate
-- card id m + 1 (input (0.15 + 0.05 m) per million tokens, cache reads a
-- tenth of it, output and reasoning four times it).
INSERT INTO ledger_tenants (id, name)
SELECT n + 1, 'tenant-' || lpad(n::text, 4, '0') FROM generate_series(0, 999) n;
INSERT INTO ledger_api_keys (id, name)
SELECT 4 * n + k + 1, lpad(to_hex(n * 16 + k), 10, '0')
FROM generate_series(0, 999) n, generate_series(0, 3) k;
INSERT INTO ledger_models (id, provider, model)
SELECT m + 1, (ARRAY['openai', 'anthropic', 'gemini', 'openrouter'])[m % 4 + 1],
    (ARRAY['openai', 'anthropic', 'gemini', 'openrouter'])[m % 4 + 1] || '-model-' || m
        || '-2025-' || lpad((m % 12 + 1)::text, 2, '0')
FROM generate_series(0, 49) m;
INSERT INTO ledger_routes (id, name) VALUES (1, 'llm_api');
INSERT INTO ledger_rates (id, card, price_id, version, currency, input, output, cache_read,
    cache_write, cache_write_1h, reasoning, per_request, discount_percent)
SELECT m.id, 'bench|' || m.id, :price_id, m.model || '@2025-01-01T00:00:00Z', 'USD',
    p, 4 * p, p / 10, p, p, 4 * p, 0, 0
FROM ledger_models m, LATERAL (SELECT 0.15 + (m.id - 1) * 0.05 AS p) x;
SELECT setval(pg_get_serial_sequence(t, 'id'), 100000)
FROM unnest(ARRAY['ledger_tenants', 'ledger_api_keys', 'ledger_models', 'ledger_routes',
    'ledger_rates']) t;

INSERT INTO ledger (occurred_at, request_id, tenant_id, received_ms, api_key_id, model_id,
    route_id, rate_id, ttfb_ms, duration_ms, input_tokens, output_tokens, cache_read_tokens,
    cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, http_status, flags, cost,
    reported_cost)
SELECT at, gen_random_uuid(), tenant_n + 1, duration + 1200, 4 * tenant_n + key_n + 1, m + 1,
    1, m + 1, ttfb, duration, input, output, cache_read, 0, 0, reasoning, http_status,
    ((CASE WHEN streamed AND r6 < 0.01 THEN 1 ELSE 0 END)
        | (CASE WHEN streamed THEN 128 ELSE 0 END)
        | (CASE WHEN m % 4 = 3 THEN 256 ELSE 0 END))::int2,
    c_in + c_cache + c_out,
    CASE WHEN m % 4 = 3 THEN c_in + c_cache + c_out ELSE 0 END
FROM (
  SELECT *, (input - cache_read) * pin AS c_in, cache_read * pin / 10 AS c_cache,
      output * pin * 4 AS c_out
  FROM (
    SELECT *, CASE WHEN r3 < 0.3 THEN input / 2 ELSE 0 END AS cache_read,
        CASE WHEN m % 5 = 0 THEN output / 3 ELSE 0 END AS reasoning
    FROM (
      SELECT *, CASE WHEN http_status = 200 THEN floor(200 + 4000 * r3 * r3)::int4 ELSE 0 END AS input,
          CASE WHEN http_status = 200 THEN floor(20 + 1500 * r4)::int4 ELSE 0 END AS output,
          (0.15 + m * 0.05) / 1000000 AS pin
      FROM (
        SELECT g, tenant_n, floor(r5 * 4)::int AS key_n,
            now() - interval '90 days' + (g::float8 / :n) * interval '90 days' AS at,
            floor(50 * power(r7, 2))::int AS m,
            CASE WHEN r2 < 0.02 THEN 429 WHEN r2 < 0.03 THEN 500 ELSE 200 END AS http_status,
            r2 < 0.43 AND r2 >= 0.03 AS streamed,
            100 + floor(900 * r5)::int4 AS ttfb,
            100 + floor(900 * r5)::int4 + floor(8000 * r6)::int4 AS duration,
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
-- the daily ones summed from the hourly one, as the fold does.
INSERT INTO rollup_hourly (tenant_id, hour, api_key_id, model_id, currency,
    requests, error_requests, incomplete_requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost)
SELECT l.tenant_id, date_trunc('hour', l.occurred_at, 'UTC'), l.api_key_id, l.model_id,
    coalesce(r.currency, ''),
    count(*), count(*) FILTER (WHERE l.http_status >= 400),
    count(*) FILTER (WHERE l.flags & 1 <> 0),
    sum(l.input_tokens), sum(l.output_tokens), sum(l.cache_read_tokens),
    sum(l.cache_write_tokens), sum(l.reasoning_tokens), sum(l.cost), sum(l.reported_cost)
FROM ledger l LEFT JOIN ledger_rates r ON r.id = l.rate_id GROUP BY 1, 2, 3, 4, 5;

INSERT INTO rollup_daily (tenant_id, day, api_key_id, model_id, currency,
    requests, error_requests, incomplete_requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost)
SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date AS day, api_key_id, model_id, currency,
    sum(requests), sum(error_requests), sum(incomplete_requests), sum(input_tokens),
    sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens),
    sum(cost), sum(reported_cost)
FROM rollup_hourly GROUP BY 1, 2, 3, 4, 5 ORDER BY 2, 1, 3, 4, 5;

INSERT INTO rollup_tenant_daily (tenant_id, day, currency,
    requests, error_requests, incomplete_requests, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost)
SELECT tenant_id, day, currency,
    sum(requests), sum(error_requests), sum(incomplete_requests), sum(input_tokens),
    sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens),
    sum(cost), sum(reported_cost)
FROM rollup_daily GROUP BY 1, 2, 3;

-- The daily rollups hold every hour generated (the data ends now); the
-- hourly one keeps the collector's default retention
-- (HOURLY_ROLLUP_RETENTION_HOURS), as the collector's hourly prune would
-- leave it.
UPDATE rollup_fold SET folded_before = date_trunc('hour', now(), 'UTC') + interval '1 hour',
    hourly_from = date_trunc('hour', now() - :retention_hours * interval '1 hour', 'UTC');
DELETE FROM rollup_hourly WHERE hour < (SELECT hourly_from FROM rollup_fold);

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

VACUUM ANALYZE ledger;
-- The pruned hours leave dead space that the collector's own pruning would
-- reuse for new hours; measure the steady state.
VACUUM (FULL, ANALYZE) rollup_hourly;
VACUUM ANALYZE rollup_daily;
VACUUM ANALYZE rollup_tenant_daily;
ANALYZE ledger_tenants, ledger_api_keys, ledger_models, ledger_routes, ledger_rates;
CREATE TABLE bench_meta (n bigint NOT NULL, generated_at timestamptz NOT NULL);
INSERT INTO bench_meta SELECT count(*), max(occurred_at) FROM ledger;
