package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tokenbroker/tokenbroker/store"
)

// Options configures [Open]. The zero value is usable.
type Options struct {
	// Now is the clock for every time the store records and for deciding
	// whether a lease has expired. Nil means time.Now.
	Now func() time.Time
	// Logger receives migration notes and file-permission warnings, never
	// token values. Nil discards.
	Logger *slog.Logger
	// SkipMigrate makes Open leave the schema alone (`serve
	// --migrate=false`, `migrate status`); see [store.Migrator].
	SkipMigrate bool
}

// Store is a [store.Store] on one SQLite file. It is safe for concurrent use
// by goroutines and, through SQLite's file locks, by other processes opening
// the same file.
type Store struct {
	w   *sql.DB // one connection: all writes
	r   *sql.DB // read-only connections
	now func() time.Time
	log *slog.Logger

	// The hottest statements, prepared once per pooled connection: reading a
	// connection on every token request, and the writes of every refresh
	// (the lease, the compare-and-swap, the releases). SQLite parses a
	// statement that is not prepared on every call, which cost a scheduled
	// refresh 15% of its CPU (BENCHMARKS.md).
	getStmt, casStmt                                            *sql.Stmt
	leaseStmt, leaseGetStmt, releaseLeaseStmt, releaseClaimStmt *sql.Stmt
	prepared                                                    []*sql.Stmt // all of the above, for Close
	// audit holds the audit trail's INSERT statements (audit.go).
	audit auditStmts

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ store.Backend = (*Store)(nil)

const (
	// busyTimeout is how long a statement waits for another process's
	// write lock before failing with SQLITE_BUSY (mapped to
	// store.ErrUnavailable).
	busyTimeout = 5 * time.Second
	// readConns bounds the read pool. Under WAL readers do not block the
	// writer or each other; more than a handful buys nothing on the small
	// machines this backend is for.
	readConns = 4
)

// Open opens (creating if needed) the database at path, a plain file path,
// and applies any pending migrations. Failures to create or open the file
// wrap [store.ErrUnavailable].
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	s := &Store{now: opts.Now, log: opts.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := prepareFile(path, s.log); err != nil {
		return nil, fmt.Errorf("store/sqlite: open %s: %w: %w", path, store.ErrUnavailable, err)
	}

	w, err := openPool(ctx, dsn(path, false), 1)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: open %s: %w", path, err)
	}
	migrations, err := loadMigrations(embeddedMigrations())
	if err == nil && !opts.SkipMigrate {
		err = migrate(ctx, w, migrations, s.now, s.log)
	}
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("store/sqlite: open %s: %w", path, err)
	}
	r, err := openPool(ctx, dsn(path, true), readConns)
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("store/sqlite: open %s: %w", path, err)
	}
	s.w, s.r = w, r
	if opts.SkipMigrate {
		// The tables may not exist yet: prepare once they do (MigrateUp).
		if err := store.CheckSchema(ctx, s); err != nil {
			return s, nil
		}
	}
	if err := s.prepare(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("store/sqlite: open %s: %w", path, err)
	}
	return s, nil
}

// prepare prepares the hottest statements on the current schema.
func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		st    **sql.Stmt
		db    *sql.DB
		query string
	}{
		{&s.getStmt, s.r, getQuery},
		{&s.casStmt, s.w, casQuery},
		{&s.leaseStmt, s.w, leaseQuery},
		{&s.leaseGetStmt, s.w, getQuery},
		{&s.releaseLeaseStmt, s.w, releaseLeaseQuery},
		{&s.releaseClaimStmt, s.w, releaseClaimQuery},
	} {
		st, err := p.db.PrepareContext(ctx, p.query)
		if err != nil {
			return fmt.Errorf("prepare: %w", classify(err))
		}
		*p.st = st
		s.prepared = append(s.prepared, st)
	}
	return nil
}

// checkPath rejects names the driver would read as something other than a
// file path: a query string, a URI or an in-memory database (which each
// pooled connection would see as a different, empty database).
func checkPath(path string) error {
	switch {
	case path == "":
		return errors.New("store/sqlite: database path is empty")
	case strings.Contains(path, "?"):
		return fmt.Errorf("store/sqlite: database path %q contains '?'; give a plain file path", path)
	case strings.HasPrefix(path, "file:"), strings.HasPrefix(path, ":memory:"):
		return fmt.Errorf("store/sqlite: database path %q is a URI or in-memory name; give a plain file path", path)
	}
	return nil
}

// prepareFile creates the directory (0700) and an empty database file (0600)
// so that SQLite never creates them with the process umask: the file holds
// sealed tokens and API key hashes.
func prepareFile(path string, log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn("store/sqlite: database file is accessible to other users; chmod 600 it",
			"path", path, "mode", fmt.Sprintf("%#o", perm))
	}
	return nil
}

// dsn sets the pragmas on every connection the pool opens, not just the
// first. The writer begins transactions IMMEDIATE: a deferred transaction
// that reads and then writes can fail with SQLITE_BUSY at once, without
// waiting, when another process wrote in between.
func dsn(path string, readOnly bool) string {
	q := []string{
		"_pragma=busy_timeout(" + strconv.FormatInt(busyTimeout.Milliseconds(), 10) + ")",
		"_pragma=foreign_keys(1)",
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(NORMAL)",
	}
	if readOnly {
		q = append(q, "_query_only=1")
	} else {
		q = append(q, "_txlock=immediate")
	}
	return path + "?" + strings.Join(q, "&")
}

func openPool(ctx context.Context, dsn string, conns int) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return db, nil
}

// Ping checks that the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	return s.fail(ctx, "ping", err)
}

// Close closes the database. Later calls return [store.ErrUnavailable];
// closing again is a no-op.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		for _, st := range s.prepared {
			_ = st.Close()
		}
		s.audit.close()
		s.closeErr = errors.Join(s.r.Close(), s.w.Close())
	})
	return s.closeErr
}

// fail turns a driver error into the store's vocabulary: unique violations
// are ErrAlreadyExists; a closed store, a lock held past busy_timeout and
// I/O trouble are ErrUnavailable. Driver messages name tables and columns,
// never bound values, so they are safe to wrap.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() || errors.Is(err, sql.ErrConnDone) || err.Error() == "sql: database is closed" {
		return fmt.Errorf("store/sqlite: %s: %w", op, store.ErrUnavailable)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("store/sqlite: %s: %w", op, ctxErr)
	}
	return fmt.Errorf("store/sqlite: %s: %w", op, classify(err))
}

func classify(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return store.ErrAlreadyExists
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY,
		sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOTADB:
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}
