package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

// Options configures [Open]. The zero value is usable.
type Options struct {
	// Now is the clock for every time the store records and for deciding
	// whether a lease has expired. Nil means time.Now.
	Now func() time.Time
	// Logger receives migration notes, never token values. Nil discards.
	Logger *slog.Logger
	// MaxConns caps the connection pool. Zero keeps pgxpool's default (the
	// DSN's pool_max_conns, else the larger of 4 and the number of CPUs).
	MaxConns int32
	// SkipMigrate makes Open leave the schema alone (`serve
	// --migrate=false`, `migrate status`); see [store.Migrator].
	SkipMigrate bool
}

// Store is a [store.Store] on a PostgreSQL database. It is safe for
// concurrent use by goroutines and by other processes (replicas) using the
// same database.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
	log  *slog.Logger

	closed    atomic.Bool
	closeOnce sync.Once
}

var _ store.Backend = (*Store)(nil)

// Open connects to the database named by dsn (a postgres:// URL or
// key=value string, as pgx reads it) and applies any pending migrations.
// Returns an error wrapping [store.ErrUnavailable] when the database cannot
// be reached.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx masks the password in its parse errors.
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	if opts.MaxConns < 0 {
		return nil, fmt.Errorf("store/postgres: MaxConns %d is negative", opts.MaxConns)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	s := &Store{now: opts.Now, log: opts.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	// NewWithConfig does not connect; the first Acquire (in migrate) does.
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	migrations, err := loadMigrations(embeddedMigrations())
	if err != nil {
		err = fmt.Errorf("store/postgres: %w", err)
	} else if !opts.SkipMigrate {
		err = s.migrate(ctx, migrations)
	}
	if err != nil {
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.do(ctx, "ping", true, func(c *pgxpool.Conn) error {
		return s.fail(ctx, "ping", c.Ping(ctx))
	})
}

// Close closes the pool, waiting for connections in use to be returned.
// Later calls return [store.ErrUnavailable]; closing again is a no-op.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.pool.Close()
	})
	return nil
}

// do runs fn on a pooled connection and returns its error, which fn has
// already put in the store's vocabulary with [Store.fail].
//
// A connection that died while idle in the pool (the database restarted, or
// an administrator ended its backend) fails its next use; pgxpool only pings
// connections idle for over a second before handing them out. When one
// connection turns out lost, its idle siblings almost certainly are too, so
// do empties the pool (pgxpool reconnects on demand) and tries once more on
// a fresh connection if the failure happened before anything was sent or,
// for reads, whenever the connection was lost: repeating a read is
// harmless, while a write cut off mid-flight may have committed, so that
// failure goes back to the caller as [store.ErrUnavailable]. Every fn
// either writes in its last statement or not at all, so a retry never
// repeats a write that succeeded.
func (s *Store) do(ctx context.Context, op string, read bool, fn func(c *pgxpool.Conn) error) error {
	for attempt := 0; ; attempt++ {
		c, err := s.acquire(ctx, op)
		if err != nil {
			return err
		}
		err = fn(c)
		c.Release()
		if err == nil || ctx.Err() != nil || s.closed.Load() {
			return err
		}
		lost := connectionLost(err)
		if lost {
			s.pool.Reset()
		}
		if attempt > 0 || !(pgconn.SafeToRetry(err) || read && lost) {
			return err
		}
		s.log.DebugContext(ctx, "store/postgres: retrying on a fresh connection", "op", op, "err", err)
	}
}

// acquire takes a connection from the pool. Failing to get one means the
// database could not be reached (or not within the caller's deadline) and
// nothing was sent: [store.ErrUnavailable]. A caller that cancelled gets
// its own context error back instead, so the server does not answer 503
// for a client that went away.
func (s *Store) acquire(ctx context.Context, op string) (*pgxpool.Conn, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("store/postgres: %s: store is closed: %w", op, store.ErrUnavailable)
	}
	c, err := s.pool.Acquire(ctx)
	if err == nil {
		return c, nil
	}
	if ctxErr := ctx.Err(); errors.Is(ctxErr, context.Canceled) {
		return nil, fmt.Errorf("store/postgres: %s: %w", op, ctxErr)
	}
	if s.closed.Load() {
		return nil, fmt.Errorf("store/postgres: %s: store is closed: %w", op, store.ErrUnavailable)
	}
	return nil, fmt.Errorf("store/postgres: %s: %w: %w", op, store.ErrUnavailable, err)
}

// fail puts a pgx error in the store's vocabulary: unique violations are
// ErrAlreadyExists; a lost connection or a server shutting down is
// ErrUnavailable; the caller's own cancellation or deadline comes back as
// the context's error. Server messages name tables, columns and
// constraints, never bound values (those are in PgError.Detail, which
// Error() leaves out), so they are safe to wrap.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505": // unique_violation
			return fmt.Errorf("store/postgres: %s: %w", op, store.ErrAlreadyExists)
		case serverGone(pgErr.Code):
			return fmt.Errorf("store/postgres: %s: %w: %w", op, store.ErrUnavailable, err)
		case strings.HasPrefix(pgErr.Code, "22"): // data_exception
			return fmt.Errorf("store/postgres: %s: the database rejected a value: %w", op, err)
		}
		return fmt.Errorf("store/postgres: %s: %w", op, err)
	}
	if s.closed.Load() {
		return fmt.Errorf("store/postgres: %s: store is closed: %w", op, store.ErrUnavailable)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("store/postgres: %s: %w", op, ctxErr)
	}
	if connectionLost(err) || pgconn.SafeToRetry(err) {
		return fmt.Errorf("store/postgres: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("store/postgres: %s: %w", op, err)
}

// serverGone reports SQLSTATEs that mean the server or this session went
// away or refuses work for now, rather than that the statement was wrong.
func serverGone(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"): // connection_exception
		return true
	case code == "57P01", // admin_shutdown (also pg_terminate_backend)
		code == "57P02", // crash_shutdown
		code == "57P03", // cannot_connect_now (starting up, shutting down)
		code == "53300": // too_many_connections
		return true
	}
	return false
}

// connectionLost reports errors that mean the connection to the server
// failed or broke, as opposed to the server answering with an error.
func connectionLost(err error) bool {
	var (
		connectErr *pgconn.ConnectError
		pgErr      *pgconn.PgError
		netErr     net.Error
	)
	switch {
	case errors.As(err, &pgErr):
		return serverGone(pgErr.Code)
	case errors.As(err, &connectErr),
		errors.As(err, &netErr),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return true
	}
	return false
}
