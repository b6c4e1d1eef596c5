-- Client-credentials connections are renewed by asking again, not with a
-- refresh token; '' is every other grant.
ALTER TABLE connections ADD COLUMN grant_type TEXT NOT NULL DEFAULT ''
	CHECK (grant_type IN ('', 'client_credentials'));

-- Pending authorization-code flows (the connect links). Rows live ten
-- minutes; a callback consumes its row by state hash.
CREATE TABLE connect_sessions (
	id            TEXT    NOT NULL PRIMARY KEY,
	connection_id TEXT    NOT NULL,
	provider      TEXT    NOT NULL,
	redirect_url  TEXT    NOT NULL DEFAULT '',
	scopes        TEXT    NOT NULL DEFAULT '',
	state_hash    BLOB    UNIQUE,
	verifier      BLOB,
	expires_at    INTEGER NOT NULL,
	created_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX connect_sessions_expires_at ON connect_sessions (expires_at);
