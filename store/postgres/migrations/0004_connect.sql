-- Client-credentials connections are renewed by asking again, not with a
-- refresh token; '' is every other grant.
ALTER TABLE connections ADD COLUMN grant_type text NOT NULL DEFAULT ''
	CHECK (grant_type IN ('', 'client_credentials'));

-- Pending authorization-code flows (the connect links). Rows live ten
-- minutes; a callback consumes its row by state hash.
CREATE TABLE connect_sessions (
	id            text COLLATE "C" NOT NULL PRIMARY KEY,
	connection_id text        NOT NULL,
	provider      text        NOT NULL,
	redirect_url  text        NOT NULL DEFAULT '',
	scopes        text        NOT NULL DEFAULT '',
	state_hash    bytea       UNIQUE,
	verifier      bytea,
	expires_at    timestamptz NOT NULL,
	created_at    timestamptz NOT NULL
);

CREATE INDEX connect_sessions_expires_at ON connect_sessions (expires_at);
