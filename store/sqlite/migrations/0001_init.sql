-- Times are INTEGER unix microseconds in UTC; NULL means zero/unknown.
-- Token columns hold sealed bytes; the store never sees plaintext.

CREATE TABLE connections (
	id                      TEXT    NOT NULL PRIMARY KEY,
	provider                TEXT    NOT NULL,
	status                  TEXT    NOT NULL CHECK (status IN ('active', 'needs_reauth', 'revoked')),
	access_token            BLOB,
	refresh_token           BLOB,
	token_type              TEXT    NOT NULL DEFAULT '',
	scope                   TEXT    NOT NULL DEFAULT '',
	expires_at              INTEGER,
	expiry_defaulted        INTEGER NOT NULL DEFAULT 0,
	refresh_expires_at      INTEGER,
	refresh_hard_expires_at INTEGER,
	last_refresh_at         INTEGER,
	last_used_at            INTEGER,
	failure                 TEXT,
	metadata                TEXT,
	version                 INTEGER NOT NULL,
	lease_owner             TEXT    NOT NULL DEFAULT '',
	lease_until             INTEGER,
	created_at              INTEGER NOT NULL,
	updated_at              INTEGER NOT NULL
) STRICT;

-- List filters page by id within a provider or a status.
CREATE INDEX connections_provider_id ON connections (provider, id);
CREATE INDEX connections_status_id ON connections (status, id);
-- The scheduler looks for active connections whose access token expires soon.
CREATE INDEX connections_status_expires_at ON connections (status, expires_at);

CREATE TABLE api_keys (
	id         TEXT    NOT NULL PRIMARY KEY,
	name       TEXT    NOT NULL DEFAULT '',
	scope      TEXT    NOT NULL,
	hash       BLOB    NOT NULL UNIQUE,
	created_at INTEGER NOT NULL,
	revoked_at INTEGER
) STRICT;
