-- The webhook outbox. Connection writes queue their lifecycle events here in
-- the same transaction; a dispatcher fans each event out to one delivery
-- per configured endpoint the first time it claims it, so the schema does
-- not depend on which endpoints exist. Events stay after delivery as each
-- connection's recent history until pruned.
CREATE TABLE outbox_events (
	id            text COLLATE "C" NOT NULL PRIMARY KEY,
	type          text        NOT NULL,
	connection_id text COLLATE "C" NOT NULL,
	provider      text        NOT NULL,
	code          text        NOT NULL DEFAULT '',
	at            timestamptz NOT NULL,
	fanned_out    boolean     NOT NULL DEFAULT false
);

CREATE INDEX outbox_events_unfanned ON outbox_events (id) WHERE NOT fanned_out;
CREATE INDEX outbox_events_connection_at ON outbox_events (connection_id, at);
CREATE INDEX outbox_events_at ON outbox_events (at);

-- A pending delivery is due when next_attempt_at has passed; claiming it
-- moves next_attempt_at to the end of the claim, so a claimer that dies
-- hands it back by doing nothing. Replicas claim with FOR UPDATE SKIP
-- LOCKED and so share the work.
CREATE TABLE outbox_deliveries (
	event_id        text COLLATE "C" NOT NULL REFERENCES outbox_events (id) ON DELETE CASCADE,
	endpoint        text        NOT NULL,
	state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'abandoned')),
	attempts        integer     NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL,
	claim_owner     text        NOT NULL DEFAULT '',
	last_error      text        NOT NULL DEFAULT '',
	done_at         timestamptz,
	PRIMARY KEY (event_id, endpoint)
);

CREATE INDEX outbox_deliveries_due ON outbox_deliveries (next_attempt_at) WHERE state = 'pending';
