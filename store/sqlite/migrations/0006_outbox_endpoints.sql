-- Each webhook endpoint a dispatcher has named, with the time from which it
-- gets events: an endpoint added to a running system receives the events
-- that happen from then on, not the whole history kept in the outbox.
-- seen_at tells an endpoint that was removed and added again (not named
-- for a week) from one that was always there.
CREATE TABLE outbox_endpoints (
	name     TEXT    NOT NULL PRIMARY KEY,
	since    INTEGER NOT NULL,
	seen_at  INTEGER NOT NULL
) STRICT;
