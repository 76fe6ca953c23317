-- ledger_ensure_partition (0021) could fail with "relation already exists"
-- when two transactions needed the same missing month at once: the second,
-- after waiting for the advisory lock, checked for the partition with a
-- catalog cache that had not yet seen the first one's CREATE. Now the
-- creation itself is conditional (CREATE TABLE IF NOT EXISTS takes the
-- namespace lock, which brings the catalog up to date) and a duplicate that
-- still slips through is taken as done.
CREATE OR REPLACE FUNCTION ledger_ensure_partition(at TIMESTAMPTZ) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    month_start TIMESTAMPTZ := date_trunc('month', at, 'UTC');
    name TEXT := 'transactions_p' || to_char(month_start AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ledger_ensure_partition'));
    BEGIN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF transactions FOR VALUES FROM (%L) TO (%L)',
            name,
            to_char(month_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'),
            to_char((month_start AT TIME ZONE 'UTC') + interval '1 month',
                'YYYY-MM-DD"T"HH24:MI:SS"+00"'));
    EXCEPTION WHEN duplicate_table THEN
        NULL;
    END;
    RETURN name;
END $$;
