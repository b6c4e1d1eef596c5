-- The webhook outbox. Connection writes queue their lifecycle events here in
-- the same transaction; a dispatcher fans each event out to one delivery
-- per configured endpoint the first time it claims it, so the schema does
-- not depend on which endpoints exist. Events stay after delivery as each
-- connection's recent history until pruned.
CREATE TABLE outbox_events (
	id            TEXT    NOT NULL PRIMARY KEY,
	type          TEXT    NOT NULL,
	connection_id TEXT    NOT NULL,
	provider      TEXT    NOT NULL,
	code          TEXT    NOT NULL DEFAULT '',
	at            INTEGER NOT NULL,
	fanned_out    INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX outbox_events_unfanned ON outbox_events (id) WHERE fanned_out = 0;
CREATE INDEX outbox_events_connection_at ON outbox_events (connection_id, at);
CREATE INDEX outbox_events_at ON outbox_events (at);

-- A pending delivery is due when next_attempt_at has passed; claiming it
-- moves next_attempt_at to the end of the claim, so a claimer that dies
-- hands it back by doing nothing.
CREATE TABLE outbox_deliveries (
	event_id        TEXT    NOT NULL REFERENCES outbox_events (id) ON DELETE CASCADE,
	endpoint        TEXT    NOT NULL,
	state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'abandoned')),
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL,
	claim_owner     TEXT    NOT NULL DEFAULT '',
	last_error      TEXT    NOT NULL DEFAULT '',
	done_at         INTEGER,
	PRIMARY KEY (event_id, endpoint)
) STRICT;

CREATE INDEX outbox_deliveries_due ON outbox_deliveries (next_attempt_at) WHERE state = 'pending';
