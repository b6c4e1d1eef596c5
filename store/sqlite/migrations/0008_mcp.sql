-- Connections to MCP servers: which server, resource indicator and issuer
-- the grant is for, and scopes a step-up asked for (JSON, see store.MCP).
ALTER TABLE connections ADD COLUMN mcp TEXT;

ALTER TABLE connect_sessions ADD COLUMN mcp TEXT;

-- One client registration per authorization server of MCP servers; the
-- client secret is sealed like tokens.
CREATE TABLE mcp_registrations (
	issuer                     TEXT    NOT NULL PRIMARY KEY,
	client_id                  TEXT    NOT NULL,
	client_secret              BLOB,
	token_endpoint_auth_method TEXT    NOT NULL DEFAULT '',
	method                     TEXT    NOT NULL DEFAULT '',
	redirect_uri               TEXT    NOT NULL DEFAULT '',
	metadata                   TEXT    NOT NULL,
	created_at                 INTEGER NOT NULL,
	updated_at                 INTEGER NOT NULL
) STRICT;
