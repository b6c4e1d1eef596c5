// Package metrics exposes tokenbroker's work as Prometheus metrics.
//
// [New] registers every collector on the [prometheus.Registerer] it is
// given (one registry per app, never the global default one) and returns a
// [*Metrics] that the other packages report to through their own small
// interfaces: it satisfies [github.com/tokenbroker/tokenbroker/broker.Metrics],
// [github.com/tokenbroker/tokenbroker/server.Metrics],
// [github.com/tokenbroker/tokenbroker/scheduler.Metrics] and
// [github.com/tokenbroker/tokenbroker/webhook.Metrics]. [Handler] serves
// the registry's exposition; the server mounts it at GET /metrics behind an
// admin API key.
//
// Families:
//
//	tokenbroker_refresh_attempts_total{provider,outcome}     calls to a token endpoint; outcome success|transient|terminal
//	tokenbroker_refresh_duration_seconds{provider}           histogram of those calls
//	tokenbroker_lease_wait_seconds{provider}                 histogram of waits for another holder's refresh lease
//	tokenbroker_connections{provider,status}                 gauge, counted in the store at scrape time
//	tokenbroker_store_errors_total{operation}                failed store reads of the collectors
//	tokenbroker_token_requests_total{result}                 GET /v1/connections/{id}/token answers
//	tokenbroker_proxy_requests_total{result}                 /v1/proxy answers
//	tokenbroker_http_requests_total{route,code}              every API answer
//	tokenbroker_scheduler_refreshes_total{provider,outcome}  connections the scheduler claimed; outcome ok|transient|terminal|error|deferred
//	tokenbroker_scheduler_claimed_total                      due connections claimed
//	tokenbroker_scheduler_lag_seconds                        how late the oldest due connection was at the last cycle
//	tokenbroker_webhook_deliveries_total{endpoint,result}    delivery attempts; result delivered|retry|abandoned
//	tokenbroker_webhook_delivery_duration_seconds{endpoint}  histogram of those attempts
//	tokenbroker_webhook_backlog                              deliveries pending, at the dispatcher's last look
//
// The connections gauge has the statuses active, failing, needs_reauth and
// revoked. failing is an active connection whose last refresh failed (it
// has a recorded failure and is backing off); it is not also counted as
// active, so a provider's series add up to its connections. Alert on
// needs_reauth (a person must reconnect) and on failing staying up.
//
// result is "ok" or the API error code the server answered with
// (reauth_required, provider_unavailable, not_found, unauthenticated, …),
// and "canceled" for a caller that went away first. A proxied call the
// provider answered is "ok" whatever its status; http_requests_total has
// the status.
//
// Labels are bounded: provider names come from the configuration, routes
// from the server's route table, webhook endpoint names from the
// configuration, codes from fixed lists. No connection id,
// key or token is ever a label or a value.
package metrics
