// Package storetest is the conformance suite every [store.Store] backend must
// pass: a backend is done when [RunTests] passes against it, under -race.
//
// The suite checks the contract written on [store.Store] plus the details a
// caller relies on without reading a backend's source:
//
//   - Every field round-trips: sealed token bytes exactly, a nil refresh
//     token as nil, zero times as zero, Failure nil or set, Metadata as
//     equivalent JSON. Times come back in UTC and within a microsecond.
//   - Create ignores the caller's Version, lease fields and timestamps; the
//     store sets them from the injected clock.
//   - Writes are compare-and-swap on Version. A stale write returns
//     [store.ErrConflict] and changes nothing. UpdateConnection does not
//     retry internally and calls update with no lock held (the suite calls
//     the store from inside update to provoke a conflict deterministically).
//   - Only the lease methods change lease fields, and they do not bump
//     Version.
//   - Nothing disappears because its access token expired.
//   - ListConnections orders ids by bytes (PostgreSQL: COLLATE "C"), pages
//     with After/Limit exactly once over every row, applies
//     [store.DefaultListLimit] and [store.MaxListLimit], and rejects a
//     negative Limit or an unknown Status.
//   - Bad input (empty id or provider, unknown status, invalid Metadata
//     JSON, empty lease owner, non-positive lease ttl, an API key hash that
//     is not SHA-256 sized) is an error and writes nothing.
//   - After Close, calls fail with [store.ErrUnavailable].
//
// Time is controlled by a [Clock] the suite advances; a backend must read
// "now" only from the function it is given, including when it compares
// lease_until (pass it as a query parameter rather than using the database's
// own now()).
package storetest
