-- Scoped API keys: the connection-id patterns and providers a key may touch,
-- as JSON arrays; empty arrays do not narrow (docs/security.md).
ALTER TABLE api_keys ADD COLUMN connections TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN providers TEXT NOT NULL DEFAULT '[]';

-- The audit trail: who did what to which connection, never a token.
CREATE TABLE audit_log (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	at            INTEGER NOT NULL,
	actor         TEXT    NOT NULL DEFAULT '',
	actor_id      TEXT    NOT NULL DEFAULT '',
	action        TEXT    NOT NULL,
	connection_id TEXT    NOT NULL DEFAULT '',
	outcome       TEXT    NOT NULL DEFAULT '',
	detail        TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX audit_log_connection ON audit_log (connection_id, id);
CREATE INDEX audit_log_at ON audit_log (at);

-- Dashboard sessions, so signing out ends a session server-side.
CREATE TABLE ui_sessions (
	id         TEXT    NOT NULL PRIMARY KEY,
	key_id     TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX ui_sessions_key ON ui_sessions (key_id);
