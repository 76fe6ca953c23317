-- Measures, on the query benchmark's data set, what a lean ledger and lean
-- daily rollup would cost on disk (issue 18's target: <= 250 bytes per
-- transaction, ledger + rollups + indexes). A design probe, not the schema:
-- it copies the generated rows into narrow tables and prints bytes per
-- transaction per table; nothing reads these tables.
--   psql -v ON_ERROR_STOP=1 -f bench/lean_prototype.sql   (on the bench database)
-- Levers measured: dictionary ids (tenant, key, provider+model, route,
-- currency) instead of text; request ids as uuid; int4 token counts and
-- durations; flags and `streamed` as bits; the cost breakdown and the price
-- version derived from the stored price id instead of stored per row; no
-- NULLs (sentinels), so no null bitmap; the daily rollup keyed by
-- (tenant, day) with B-tree deduplication instead of a unique key over
-- every dimension.
\timing on
SET maintenance_work_mem = '512MB';
SET work_mem = '256MB';
DROP TABLE IF EXISTS lean_ledger, lean_daily, lean_tenants, lean_keys, lean_models, lean_routes;

CREATE TABLE lean_tenants (id int4 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text UNIQUE NOT NULL);
CREATE TABLE lean_keys (id int4 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text UNIQUE NOT NULL);
CREATE TABLE lean_models (id int4 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, provider text NOT NULL,
    model text NOT NULL, UNIQUE (provider, model));
CREATE TABLE lean_routes (id int4 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text UNIQUE NOT NULL);
INSERT INTO lean_tenants (name) SELECT DISTINCT tenant_id FROM usage_tenant_daily ORDER BY 1;
INSERT INTO lean_keys (name) SELECT DISTINCT api_key_id FROM usage_daily WHERE api_key_id <> '' ORDER BY 1;
INSERT INTO lean_models (provider, model) SELECT DISTINCT provider, model FROM usage_daily ORDER BY 1, 2;
INSERT INTO lean_routes (name) SELECT DISTINCT route FROM transactions WHERE route IS NOT NULL;

-- Columns ordered widest-first so nothing is padded.
CREATE TABLE lean_ledger (
    occurred_at       timestamptz NOT NULL,
    request_id        uuid        NOT NULL,
    tenant_id         int4        NOT NULL,
    received_after_ms int4        NOT NULL,
    api_key_id        int4        NOT NULL,  -- 0: none
    model_id          int4        NOT NULL,  -- provider + model
    route_id          int4        NOT NULL,  -- 0: none
    price_id          int4        NOT NULL,  -- 0: unpriced
    ttfb_ms           int4        NOT NULL,  -- -1: none
    duration_ms       int4        NOT NULL,
    input_tokens      int4        NOT NULL,
    output_tokens     int4        NOT NULL,
    cache_read_tokens int4        NOT NULL,
    cache_write_tokens int4       NOT NULL,
    cache_write_1h_tokens int4    NOT NULL,
    reasoning_tokens  int4        NOT NULL,
    http_status       int2        NOT NULL,
    flags             int2        NOT NULL,  -- bits: streamed, incomplete, ..., cost reported
    currency_id       int2        NOT NULL,  -- 0: unpriced
    cost              numeric     NOT NULL,
    reported_cost     numeric     NOT NULL
);

INSERT INTO lean_ledger
SELECT t.occurred_at, t.request_id::uuid, lt.id,
    (extract(epoch FROM t.received_at - t.occurred_at) * 1000)::int4,
    coalesce(k.id, 0), m.id, coalesce(r.id, 0), coalesce(t.price_id, 0)::int4,
    coalesce(t.ttfb_ms, -1)::int4, coalesce(t.duration_ms, -1)::int4,
    t.input_tokens::int4, t.output_tokens::int4, t.cache_read_tokens::int4,
    t.cache_write_tokens::int4, t.cache_write_1h_tokens::int4, t.reasoning_tokens::int4,
    t.http_status::int2,
    (t.streamed::int + 2 * ('incomplete' = ANY(t.flags))::int
        + 128 * (t.reported_cost IS NOT NULL)::int)::int2,
    CASE WHEN t.currency IS NULL THEN 0 ELSE 1 END::int2,
    coalesce(t.cost, 0), coalesce(t.reported_cost, 0)
FROM transactions t
JOIN lean_tenants lt ON lt.name = t.tenant_id
LEFT JOIN lean_keys k ON k.name = t.api_key_id
JOIN lean_models m ON m.provider = t.provider AND m.model = coalesce(t.model, '')
LEFT JOIN lean_routes r ON r.name = t.route
ORDER BY t.occurred_at;
ALTER TABLE lean_ledger ADD PRIMARY KEY (tenant_id, occurred_at, request_id);
CREATE INDEX lean_ledger_time ON lean_ledger USING brin (occurred_at) WITH (pages_per_range = 32);

CREATE TABLE lean_daily (
    tenant_id           int4    NOT NULL,
    day                 date    NOT NULL,
    api_key_id          int4    NOT NULL,
    model_id            int4    NOT NULL,
    requests            int4    NOT NULL,
    error_requests      int4    NOT NULL,
    incomplete_requests int4    NOT NULL,
    currency_id         int2    NOT NULL,
    input_tokens        int8    NOT NULL,
    output_tokens       int8    NOT NULL,
    cache_read_tokens   int8    NOT NULL,
    cache_write_tokens  int8    NOT NULL,
    reasoning_tokens    int8    NOT NULL,
    cost                numeric NOT NULL,
    reported_cost       numeric NOT NULL
);
INSERT INTO lean_daily
SELECT lt.id, d.day, coalesce(k.id, 0), m.id, d.requests::int4, d.error_requests::int4,
    d.incomplete_requests::int4, CASE WHEN d.currency = '' THEN 0 ELSE 1 END::int2,
    d.input_tokens, d.output_tokens, d.cache_read_tokens, d.cache_write_tokens,
    d.reasoning_tokens, d.cost, d.reported_cost
FROM usage_daily d
JOIN lean_tenants lt ON lt.name = d.tenant_id
LEFT JOIN lean_keys k ON k.name = d.api_key_id
JOIN lean_models m ON m.provider = d.provider AND m.model = d.model
ORDER BY d.day, lt.id, 3, 4;
-- Not unique: the fold appends a closed day's groups once, late rows update
-- them through this index; deduplication keeps it a few bytes per row.
CREATE INDEX lean_daily_tenant_day ON lean_daily (tenant_id, day);
VACUUM ANALYZE lean_ledger;
VACUUM ANALYZE lean_daily;

SELECT t AS "table", n AS rows,
    round(bytes / 1048576.0) AS mib,
    round(bytes::numeric / (SELECT count(*) FROM transactions), 1) AS bytes_per_transaction
FROM (
    SELECT 'lean_ledger' AS t, (SELECT count(*) FROM lean_ledger) AS n, pg_total_relation_size('lean_ledger') AS bytes
    UNION ALL SELECT 'lean_daily', (SELECT count(*) FROM lean_daily), pg_total_relation_size('lean_daily')
    UNION ALL SELECT 'usage_hourly (today, 7-day retention)', (SELECT count(*) FROM usage_hourly), pg_total_relation_size('usage_hourly')
    UNION ALL SELECT 'usage_tenant_daily (today)', (SELECT count(*) FROM usage_tenant_daily), pg_total_relation_size('usage_tenant_daily')
) s
UNION ALL
SELECT 'total', NULL, round((pg_total_relation_size('lean_ledger') + pg_total_relation_size('lean_daily')
        + pg_total_relation_size('usage_hourly') + pg_total_relation_size('usage_tenant_daily')) / 1048576.0),
    round((pg_total_relation_size('lean_ledger') + pg_total_relation_size('lean_daily')
        + pg_total_relation_size('usage_hourly') + pg_total_relation_size('usage_tenant_daily'))::numeric
        / (SELECT count(*) FROM transactions), 1);
SELECT 'lean_ledger heap only' AS part, round(pg_relation_size('lean_ledger')::numeric / (SELECT count(*) FROM lean_ledger), 1) AS bytes_per_row
UNION ALL SELECT 'lean_ledger key', round(pg_relation_size('lean_ledger_pkey')::numeric / (SELECT count(*) FROM lean_ledger), 1)
UNION ALL SELECT 'lean_daily heap only', round(pg_relation_size('lean_daily')::numeric / (SELECT count(*) FROM lean_daily), 1)
UNION ALL SELECT 'lean_daily index', round(pg_relation_size('lean_daily_tenant_day')::numeric / (SELECT count(*) FROM lean_daily), 1);
