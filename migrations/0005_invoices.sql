-- Finalized invoices: one per (tenant, calendar month UTC, currency),
-- immutable once written. A draft is never stored; it is computed from the
-- ledger on every read.
CREATE SEQUENCE invoices_id_seq;

CREATE TABLE invoices (
    id                    BIGINT      PRIMARY KEY DEFAULT nextval('invoices_id_seq'),
    number                TEXT        NOT NULL UNIQUE,
    tenant_id             TEXT        NOT NULL,
    period                TEXT        NOT NULL CHECK (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    period_start          TIMESTAMPTZ NOT NULL,
    period_end            TIMESTAMPTZ NOT NULL CHECK (period_end > period_start),
    currency              TEXT        NOT NULL,
    minor_digits          INTEGER     NOT NULL CHECK (minor_digits BETWEEN 0 AND 4),
    rounding              TEXT        NOT NULL,
    subtotal_precise      NUMERIC     NOT NULL,
    subtotal_minor        BIGINT      NOT NULL,
    credits_applied_minor BIGINT      NOT NULL CHECK (credits_applied_minor >= 0),
    total_minor           BIGINT      NOT NULL,
    unpriced_requests     BIGINT      NOT NULL,
    finalized_at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tenant_id, period, currency),
    CHECK (total_minor = subtotal_minor - credits_applied_minor)
);

ALTER SEQUENCE invoices_id_seq OWNED BY invoices.id;

CREATE TABLE invoice_lines (
    invoice_id     BIGINT  NOT NULL REFERENCES invoices (id),
    position       INTEGER NOT NULL,
    model          TEXT    NOT NULL,
    token_class    TEXT    NOT NULL,
    description    TEXT    NOT NULL,
    quantity       BIGINT  NOT NULL,
    unit           TEXT    NOT NULL,
    unit_price     NUMERIC,
    amount         NUMERIC NOT NULL,
    amount_minor   BIGINT  NOT NULL,
    adjusts_period TEXT,
    PRIMARY KEY (invoice_id, position)
);

-- Which ledger rows an invoice billed: each at most once, ever. Usage of a
-- finalized period that is not in here (it arrived, or was repriced, after
-- finalization) is billed on a later invoice as an adjustment.
CREATE TABLE invoice_items (
    tenant_id  TEXT   NOT NULL,
    request_id TEXT   NOT NULL,
    invoice_id BIGINT NOT NULL REFERENCES invoices (id) DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (tenant_id, request_id)
);

CREATE INDEX invoice_items_invoice ON invoice_items (invoice_id);

-- Gapless invoice numbers per year of finalization (INV-2026-000001).
CREATE TABLE invoice_counters (
    year INTEGER PRIMARY KEY,
    last BIGINT  NOT NULL
);

CREATE FUNCTION invoices_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'finalized invoices are immutable; bill a correction on a later invoice';
END;
$$;

CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_immutable();
CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoices_immutable();
CREATE TRIGGER invoice_items_immutable BEFORE UPDATE OR DELETE ON invoice_items
    FOR EACH ROW EXECUTE FUNCTION invoices_immutable();
