// Package scheduler refreshes connections in the background before their
// access tokens expire, so that callers find a valid token instead of
// waiting for a refresh.
//
// A [Scheduler] wakes every interval, claims the connections that are due
// (their NextRefreshAt, which the broker sets with jitter ahead of the
// refresh window or of a refresh token's idle death, has passed) through
// [store.Scheduling], and hands each to the broker's RefreshIfDue: the same
// single flight, lease and save-first path every other refresh takes. The
// claim is what lets several replicas share the work without a coordinator:
// a claimed connection is not handed to another replica until the claim
// lapses, and on PostgreSQL claims are taken with FOR UPDATE SKIP LOCKED so
// replicas do not wait for each other.
//
// Calls to each provider's token endpoint go through a token bucket on the
// scheduler's clock (the provider profile's token_rate_limit and
// token_rate_burst), which also spreads a large claimed batch over time
// instead of sending it at once. A provider that answers with Retry-After
// (429, or 503 with the header) pauses its bucket for that long. Failures
// themselves are the broker's business: it records them, backs off per
// connection and moves NextRefreshAt past the cooldown, so the scheduler
// never retries a failing connection on its own.
package scheduler
