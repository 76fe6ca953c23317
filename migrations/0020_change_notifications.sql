-- Replicas in agreement (docs/api.md, "Replicas"). Each collector replica
-- keeps in memory what it reads on every request: the price book (catalog,
-- tenant agreements, model aliases) and verified tenant tokens. Every
-- statement that changes one of their tables bumps that topic's generation
-- here and notifies the channel `billing_changes` with 'topic:generation',
-- whoever writes (the API, `collector prices import`, the price sync, psql).
--
-- PostgreSQL delivers a notification only when its transaction commits
-- (never for one rolled back), so a replica reloads exactly what it can
-- already read. Replicas also compare generations: after their listener
-- reconnects (notifications sent meanwhile are lost), on a fallback poll,
-- and before pricing (collector/src/changes.rs).
CREATE TABLE change_generations (
    topic      TEXT   PRIMARY KEY,
    generation BIGINT NOT NULL DEFAULT 0
);
INSERT INTO change_generations (topic) VALUES ('pricing'), ('tokens');

-- Statement-level: one bump and one notification per statement, however
-- many rows it changed. The counter row stays locked until the writer
-- commits, so generations are never skipped or reused; writers of one topic
-- queue behind each other (admin writes, never on the ingest path).
CREATE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bumped BIGINT;
BEGIN
    -- A statement that changed no row (an import whose prices all exist
    -- already, a replica seeding the bundled catalog) changes nothing cached.
    IF TG_OP <> 'TRUNCATE' THEN
        IF NOT EXISTS (SELECT 1 FROM changed_rows) THEN
            RETURN NULL;
        END IF;
    END IF;
    UPDATE change_generations SET generation = generation + 1
     WHERE topic = TG_ARGV[0]
    RETURNING generation INTO bumped;
    PERFORM pg_notify('billing_changes', TG_ARGV[0] || ':' || bumped);
    RETURN NULL;
END
$$;

-- A trigger with a transition table takes one event, hence four per table.
DO $$
DECLARE
    t RECORD;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('price_catalog', 'pricing'),
        ('tenant_pricing', 'pricing'),
        ('model_aliases', 'pricing'),
        ('api_tokens', 'tokens')
    ) AS v (tab, topic) LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS changed_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION notify_change(%L)',
                       t.tab || '_inserted', t.tab, t.topic);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING NEW TABLE AS changed_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION notify_change(%L)',
                       t.tab || '_updated', t.tab, t.topic);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS changed_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION notify_change(%L)',
                       t.tab || '_deleted', t.tab, t.topic);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION notify_change(%L)',
                       t.tab || '_truncated', t.tab, t.topic);
    END LOOP;
END
$$;
