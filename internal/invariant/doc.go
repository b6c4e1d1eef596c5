// Package invariant drives a tokenbroker deployment with a seeded random
// sequence of operations — imports, re-imports, deletes and re-creates
// under the same id, token reads, proxied calls that the API answers 401 at
// random, forced refreshes, key rotations, provider faults (5xx, a
// gateway's 504, a timeout after the request was sent) and, with several
// replicas, SIGKILL of a replica in the middle of a refresh — and checks
// after every step that no grant is lost, spent twice or served to the
// wrong connection (see [Run]).
//
// It is test support: the tests in internal/app (one process on SQLite) and
// internal/cluster (three replicas on PostgreSQL) run it; docs/testing.md
// gives the commands for a long soak.
package invariant
