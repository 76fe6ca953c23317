-- Per-tenant pricing agreements (discount or contract prices), versioned
-- like the catalog: rows are immutable, the latest effective_from <= the
-- transaction time applies. model '*' applies to every model of the tenant;
-- a model-specific row wins over '*'.
CREATE TABLE tenant_pricing (
    tenant_id      TEXT        NOT NULL,
    model          TEXT        NOT NULL,
    effective_from TIMESTAMPTZ NOT NULL,
    adjustment     JSONB       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, model, effective_from)
);
