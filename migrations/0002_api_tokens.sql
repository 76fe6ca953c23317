-- Tenant-scoped read tokens for the query API. The token itself is shown
-- once at creation and never stored: only its SHA-256 digest is kept, so a
-- copy of this table cannot be used to authenticate.
CREATE TABLE api_tokens (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  TEXT        NOT NULL,
    name       TEXT        NOT NULL,
    token_hash BYTEA       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);

CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, id);
