// Package cluster tests tokenbroker as it is deployed for scale-out: several
// real tokenbroker processes (the binary built from cmd/tokenbroker) sharing
// one PostgreSQL database and one encryption key file, in front of an
// in-process fosite authorization server that rotates refresh tokens and
// detects their reuse.
//
// The tests prove the refresh algorithm of docs/architecture.md and the
// scale-out of docs/operations.md across process boundaries, where an in-process
// single-flight cannot help: exactly one refresh per connection reaches the
// provider however many callers ask however many replicas at once; a replica
// killed while it holds the refresh lease blocks the others only until the
// lease lapses, and what happens next is honest (a working connection, or
// one marked needs_reauth, never a half-written row); and a database outage
// gives clean 503 answers and loses nothing.
//
// The package has no code of its own outside its tests. The tests need
// PostgreSQL (see internal/pgtest) and a Go toolchain, with which TestMain
// builds the binary once per run.
package cluster
