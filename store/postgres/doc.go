// Package postgres is the [store.Store] backend for several replicas
// sharing one PostgreSQL database, on github.com/jackc/pgx/v5 and its
// pgxpool.
//
// # Concurrency across replicas
//
// Compare-and-swap is one UPDATE … WHERE id = $1 AND version = $n; when it
// matches nothing, a second read tells [store.ErrNotFound] from
// [store.ErrConflict]. [Store.UpdateConnection] reads the row, calls update
// with no lock or transaction held and then compare-and-swaps; it does not
// retry. The refresh lease is taken by one UPDATE that matches only a free,
// expired or own lease, with "now" from [Options.Now] passed as a parameter
// rather than the database's now(), so that every replica and the tests
// judge expiry by the same clock. Concurrent UPDATEs of one row queue on its
// row lock and re-check their condition against the winner's commit, so
// exactly one owner gets the lease.
//
// There is no LISTEN/NOTIFY: a replica waiting for another's refresh polls
// the row. Notifications would need a dedicated connection per store that
// re-listens after every reconnect, for little gain over polling with
// backoff on the one row.
//
// # Failures
//
// Errors that mean the database could not be reached or went away (refused
// or failed connects, a pool or store that is closed, connections ended by
// a restart or by pg_terminate_backend, a deadline that passed while waiting
// for a pooled connection) wrap [store.ErrUnavailable], so the server can
// answer 503. A caller's own cancellation comes back as [context.Canceled]
// instead. pgxpool reconnects on demand, so a Store outlives a database
// restart: after one connection is found dead the pool is emptied, reads are
// tried once more on a fresh connection, and writes are tried again only when
// nothing had been sent, because a write cut off mid-flight may have
// committed. Such a write reports ErrUnavailable although it may have
// landed; a caller that retries it with the same version gets
// [store.ErrConflict] if it did, and re-reads. Unique violations are
// [store.ErrAlreadyExists].
//
// # Storage format
//
// Times are timestamptz (microseconds, returned in UTC; NULL for the zero
// time), tokens bytea (an empty token is NULL, so nil comes back nil),
// Failure and Metadata jsonb, which keeps a document's meaning but not its
// whitespace or key order. Ids are COLLATE "C", so they sort bytewise
// whatever the database's collation, the order
// [store.Store.ListConnections] promises. Text columns cannot hold NUL or
// invalid UTF-8: such ids are never found, and writing such a value is an
// error naming the field. Indexes cover listing by provider or status and
// the scheduler's search by status and next_refresh_at.
//
// # Migrations
//
// Schema changes are embedded SQL files (migrations/NNNN_name.sql) applied
// in order, each with its row in schema_migrations, all in one transaction
// when the store opens. Replicas that start together serialize on a
// session-level advisory lock (pg_advisory_lock, one fixed key, scoped to
// the database) held on a connection taken out of the pool for the purpose
// and closed afterwards, so the lock cannot outlive the migration; the
// others then find the work done. A database whose schema is newer than
// this build is refused. Tables are created unqualified, in the first
// schema of the search_path; to keep them apart from other applications'
// tables, create a schema and name it in the DSN (…?search_path=tokenbroker).
package postgres
