-- Token columns hold sealed bytes; the store never sees plaintext. A NULL
-- time means zero/unknown. Ids are COLLATE "C" so that they sort and page
-- bytewise whatever the database's default collation is.

CREATE TABLE connections (
	id                      text COLLATE "C" NOT NULL PRIMARY KEY,
	provider                text        NOT NULL,
	status                  text        NOT NULL CHECK (status IN ('active', 'needs_reauth', 'revoked')),
	access_token            bytea,
	refresh_token           bytea,
	token_type              text        NOT NULL DEFAULT '',
	scope                   text        NOT NULL DEFAULT '',
	expires_at              timestamptz,
	expiry_defaulted        boolean     NOT NULL DEFAULT false,
	refresh_expires_at      timestamptz,
	refresh_hard_expires_at timestamptz,
	last_refresh_at         timestamptz,
	last_used_at            timestamptz,
	failure                 jsonb,
	metadata                jsonb,
	version                 bigint      NOT NULL,
	-- A free lease is NULL in both columns.
	lease_owner             text,
	lease_until             timestamptz,
	created_at              timestamptz NOT NULL,
	updated_at              timestamptz NOT NULL,
	CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- List filters page by id within a provider or a status.
CREATE INDEX connections_provider_id ON connections (provider, id);
CREATE INDEX connections_status_id ON connections (status, id);
-- The scheduler looks for active connections whose access token expires soon.
CREATE INDEX connections_status_expires_at ON connections (status, expires_at);

CREATE TABLE api_keys (
	id         text COLLATE "C" NOT NULL PRIMARY KEY,
	name       text        NOT NULL DEFAULT '',
	scope      text        NOT NULL,
	hash       bytea       NOT NULL UNIQUE,
	created_at timestamptz NOT NULL,
	revoked_at timestamptz
);
