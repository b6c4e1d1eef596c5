// Package webhook delivers connection lifecycle events (created, deleted,
// refresh failed, reauth required, recovered) to HTTP endpoints, signed,
// at least once.
//
// The events come from the store's outbox ([store.Outbox]): the broker
// attaches them to the connection write that causes them and the store
// queues them in the same transaction, so a crash can never record a change
// and lose its event. A [Dispatcher] claims due deliveries (one per event
// and endpoint; replicas sharing a PostgreSQL database share the work),
// POSTs each as JSON signed with HMAC-SHA256 ([Sign], [Verify]), acks the
// ones answered with a 2xx and schedules the others again with exponential
// backoff. A crash between the POST and the ack sends the event again, so
// receivers deduplicate on the event id.
//
// docs/webhooks.md is the receiver's manual: payload, headers, signature
// verification and retry policy.
package webhook
