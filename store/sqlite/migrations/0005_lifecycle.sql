-- When the current access token was obtained: its lifetime caps the refresh
-- window. Rows written before this column get NULL, which the lifecycle
-- rules read as "lifetime unknown" (the provider's default lifetime applies).
ALTER TABLE connections ADD COLUMN issued_at INTEGER;

-- When a caller's report of a failing token last caused a refresh: the
-- on-error budget allows one such refresh per connection per interval.
ALTER TABLE connections ADD COLUMN on_error_refresh_at INTEGER;

-- Set under the refresh lease just before a rotating provider is sent the
-- refresh token, cleared by the write of the answer (or of the failure): a
-- lease holder that finds it set knows the previous holder stopped while the
-- provider may have spent the token.
ALTER TABLE connections ADD COLUMN refresh_started_at INTEGER;

-- Which life of the connection id this row is: a new value on every create,
-- so that nothing bound to a deleted connection (an in-flight refresh, a
-- cached or unsaved token) is ever applied to one created again under the
-- same id. Existing rows get one each.
ALTER TABLE connections ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
UPDATE connections SET incarnation = lower(hex(randomblob(16))) WHERE incarnation = '';
