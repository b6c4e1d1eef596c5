-- Connections to MCP servers: which server, resource indicator and issuer
-- the grant is for, and scopes a step-up asked for (JSON, see store.MCP).
ALTER TABLE connections ADD COLUMN mcp jsonb;

ALTER TABLE connect_sessions ADD COLUMN mcp jsonb;

-- One client registration per authorization server of MCP servers; the
-- client secret is sealed like tokens.
CREATE TABLE mcp_registrations (
	issuer                     text        NOT NULL PRIMARY KEY,
	client_id                  text        NOT NULL,
	client_secret              bytea,
	token_endpoint_auth_method text        NOT NULL DEFAULT '',
	method                     text        NOT NULL DEFAULT '',
	redirect_uri               text        NOT NULL DEFAULT '',
	metadata                   jsonb       NOT NULL,
	created_at                 timestamptz NOT NULL,
	updated_at                 timestamptz NOT NULL
);
