// Package broker is tokenbroker's service core: it imports connections,
// hands out valid access tokens, and refreshes them with the guarantees the
// rest of the system relies on.
//
// The refresh algorithm (docs/architecture.md, "The refresh algorithm") runs here:
//
//  1. Read the row; a token that is not due (package lifecycle decides) is
//     returned at once.
//  2. In-process, callers for one connection join a single flight.
//  3. Across processes, the flight takes the connection's lease in the store,
//     renewing it while the provider call runs; a loser waits for the
//     winner's write and returns the winner's token.
//  4. Under the lease the row is read again: if someone refreshed meanwhile,
//     that token is returned.
//  5. The token endpoint is called on a detached context with a timeout, so
//     one caller giving up does not cancel the refresh for everyone.
//  6. The answer is saved first (lifecycle.Apply, then a compare-and-swap
//     on the row's incarnation and version), keeping the old refresh token
//     when no new one came back; only then is it introspected or handed
//     out. A token for a connection deleted meanwhile is discarded.
//  7. A failure is classified and recorded; a terminal one marks the
//     connection needs_reauth and the provider is not called again for it.
//  8. The lease is released.
//
// Token values exist in plaintext only in memory on their way to a caller;
// the store sees them sealed, and no log line or error carries them.
package broker
