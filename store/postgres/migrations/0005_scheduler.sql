-- When the scheduler should next refresh the connection (the broker computes
-- it on every write), and which scheduler has claimed it until when, so that
-- replicas share due connections without handing one out twice.
ALTER TABLE connections ADD COLUMN next_refresh_at timestamptz;
ALTER TABLE connections ADD COLUMN scheduled_by text;
ALTER TABLE connections ADD COLUMN scheduled_until timestamptz;

-- Rows written before this column existed get a conservative schedule: ten
-- minutes ahead of expiry. Their next write replaces it with the provider's.
UPDATE connections SET next_refresh_at = expires_at - interval '10 minutes'
	WHERE status = 'active' AND expires_at IS NOT NULL;

-- The scheduler asks for active connections due by now, oldest first.
CREATE INDEX connections_status_next_refresh_at ON connections (status, next_refresh_at);
