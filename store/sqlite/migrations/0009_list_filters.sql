-- Listing by provider and status together pages through this index in id
-- order. Without it such a list walks the status index and skips the other
-- providers' rows: a provider with few connections in a common status cost
-- a scan of the table (BENCHMARKS.md, "A million connections").
CREATE INDEX connections_provider_status_id ON connections (provider, status, id);

-- Nothing searches by expiry since the scheduler moved to next_refresh_at
-- (0004), but every import and every refresh paid for keeping this index.
DROP INDEX connections_status_expires_at;
