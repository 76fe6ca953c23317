-- The all-tenant time index as BRIN: rows arrive in time order, so block
-- ranges summarize occurred_at well; a few hundred kB at 10M rows instead of
-- ~30 bytes per row, and one B-tree less to update on every insert. It finds
-- a time range fast but cannot return rows in order: all-tenant pages scan
-- backwards in growing windows instead (db::list_transactions). Per-tenant
-- reads keep transactions_tenant_time.
DROP INDEX transactions_time;
CREATE INDEX transactions_time_brin ON transactions USING brin (occurred_at)
    WITH (pages_per_range = 32, autosummarize = on);
