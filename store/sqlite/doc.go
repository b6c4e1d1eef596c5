// Package sqlite is the single-machine [store.Store] backend, on the pure-Go
// driver modernc.org/sqlite.
//
// # Files and pragmas
//
// [Open] creates the database's directory (0700) and file (0600) when they
// are missing. Every pooled connection runs with journal_mode=WAL,
// synchronous=NORMAL, foreign_keys=ON and a busy_timeout, set through the
// driver's DSN _pragma parameters so that a connection the pool opens later
// gets them too. SQLite creates the -wal and -shm files with the database
// file's mode.
//
// # Concurrency
//
// Writes go through a pool of exactly one connection, so goroutines in one
// process queue in database/sql instead of meeting SQLITE_BUSY; its
// transactions begin IMMEDIATE so that another process writing the same file
// makes them wait (busy_timeout) rather than fail on a lock upgrade. Reads go
// through a separate read-only pool and, under WAL, run alongside the writer.
//
// Compare-and-swap is one UPDATE … WHERE id = ? AND version = ?.
// [Store.UpdateConnection] reads the row, calls update with no lock held and
// then compare-and-swaps; it does not retry, so a lost race returns
// [store.ErrConflict] and the caller decides whether to re-read. A lease is
// taken by one UPDATE that matches only a free, expired or own lease, with
// "now" from [Options.Now] passed as a parameter.
//
// # Storage format
//
// Times are INTEGER unix microseconds in UTC (NULL for the zero time), so they
// round-trip to the microsecond and compare as numbers in SQL. Failure and
// Metadata are JSON text. Ids sort bytewise (SQLite's BINARY collation), the
// order [store.Store.ListConnections] promises. Indexes cover listing by
// provider or status and the scheduler's search by status and next_refresh_at.
//
// # Migrations
//
// Schema changes are embedded SQL files (migrations/NNNN_name.sql) applied in
// order, each with its row in schema_migrations, all in one transaction when
// the store opens; reopening applies nothing twice. A database whose schema
// is newer than this build is refused.
package sqlite
