-- Scoped API keys: the connection-id patterns and providers a key may touch;
-- empty arrays do not narrow (docs/security.md).
ALTER TABLE api_keys ADD COLUMN connections text[] NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN providers text[] NOT NULL DEFAULT '{}';

-- Revoking a key is announced to every replica, which drops its cached
-- keys at once instead of waiting for the cache entry to expire.
CREATE FUNCTION tokenbroker_notify_api_key() RETURNS trigger AS $$
BEGIN
	PERFORM pg_notify('tokenbroker_api_keys', NEW.id);
	RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_keys_notify_update
	AFTER UPDATE ON api_keys
	FOR EACH ROW EXECUTE FUNCTION tokenbroker_notify_api_key();

-- The audit trail: who did what to which connection, never a token.
CREATE TABLE audit_log (
	id            bigserial   PRIMARY KEY,
	at            timestamptz NOT NULL,
	actor         text        NOT NULL DEFAULT '',
	actor_id      text        NOT NULL DEFAULT '',
	action        text        NOT NULL,
	connection_id text COLLATE "C" NOT NULL DEFAULT '',
	outcome       text        NOT NULL DEFAULT '',
	detail        text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_connection ON audit_log (connection_id, id);
CREATE INDEX audit_log_at ON audit_log (at);

-- Dashboard sessions, so signing out ends a session server-side.
CREATE TABLE ui_sessions (
	id         text COLLATE "C" NOT NULL PRIMARY KEY,
	key_id     text        NOT NULL,
	created_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL
);
CREATE INDEX ui_sessions_key ON ui_sessions (key_id);
