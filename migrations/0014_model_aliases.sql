-- Admin-managed names for catalog models: an Azure deployment
-- (`prod-gpt4o-eu`) or a provider's own spelling (`gpt-35-turbo`) priced as
-- the catalog `model`. tenant_id '*' = every tenant, provider '*' = any
-- provider; the most specific row wins (see collector/src/price_book.rs).
-- Rows are mutable: a transaction keeps its raw model and records the
-- alias in its price_version. updated_at and the row count let replicas
-- notice changes (db::pricing_version).
CREATE TABLE model_aliases (
    tenant_id  TEXT        NOT NULL,
    provider   TEXT        NOT NULL,
    alias      TEXT        NOT NULL,
    model      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider, alias)
);
