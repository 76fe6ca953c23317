-- Invoice numbers were gapless per year across all tenants
-- (INV-2026-000042): the gap between two of a tenant's numbers told it how
-- many invoices the others got. From now on each tenant numbers its
-- invoices gaplessly in its own series, INV-<year>-<series>-<6 digits>,
-- the series being 10 hex digits of SHA-256 of its tenant id
-- (collector/src/invoices.rs). Numbers already issued stay as they are.
CREATE TABLE invoice_series_counters (
    tenant_id TEXT    NOT NULL,
    year      INTEGER NOT NULL,
    last      BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, year)
);
