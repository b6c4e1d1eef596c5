package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

func embeddedMigrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}

type migration struct {
	version int
	name    string
	sql     string
}

// migrateLockKey is the pg_advisory_lock key every tokenbroker process
// takes while migrating ("tokenbrk" in ASCII). Advisory locks are scoped to
// the current database, so tokenbroker databases on one server do not wait
// for each other.
const migrateLockKey int64 = 0x746f6b656e62726b

// loadMigrations reads NNNN_name.sql files from fsys, in version order.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, name := range names {
		prefix, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version and '_'", name)
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: path.Base(name), sql: string(body)})
	}
	if len(out) == 0 {
		return nil, errors.New("no migrations found")
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[i-1].name, out[i].name, out[i].version)
		}
	}
	return out, nil
}

// migrate applies the migrations the database has not seen, all in one
// transaction: either the schema moves to the newest version or it stays
// where it was.
//
// Replicas starting at the same moment must not race to create the same
// tables, so migrate first takes a session-level advisory lock on a
// connection of its own; the others block on it and, once they hold it,
// find the work done. That connection is taken out of the pool and closed
// afterwards, and ending the session releases the lock even when the
// explicit unlock cannot be sent, so a broken migration never leaves the
// lock held by a connection idling in the pool.
func (s *Store) migrate(ctx context.Context, migrations []migration) error {
	pooled, err := s.acquire(ctx, "migrate")
	if err != nil {
		return err
	}
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))

	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		return s.fail(ctx, "migrate: take the migration lock", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return s.fail(ctx, "migrate: begin", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
	if err := s.applyMigrations(ctx, tx, migrations); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return s.fail(ctx, "migrate: commit", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, migrateLockKey); err != nil {
		// Closing the connection releases it anyway.
		s.log.WarnContext(ctx, "store/postgres: could not release the migration lock; closing its connection", "err", err)
	}
	return nil
}

func (s *Store) applyMigrations(ctx context.Context, tx pgx.Tx, migrations []migration) error {
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     NOT NULL PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL
	)`); err != nil {
		return s.fail(ctx, "migrate", err)
	}
	rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return s.fail(ctx, "migrate", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return s.fail(ctx, "migrate", err)
	}
	applied := map[int]bool{}
	latest := migrations[len(migrations)-1].version
	for _, v := range versions {
		if int(v) > latest {
			return fmt.Errorf("store/postgres: migrate: database schema version %d is newer than this build knows (%d); upgrade tokenbroker", v, latest)
		}
		applied[int(v)] = true
	}
	for _, m := range migrations {
		if applied[m.version] {
			continue
		}
		// No arguments: pgx sends it with the simple protocol, which
		// allows several statements in one string.
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return s.fail(ctx, "migrate: "+m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			m.version, m.name, stored(s.now())); err != nil {
			return s.fail(ctx, "migrate: "+m.name, err)
		}
		s.log.InfoContext(ctx, "store/postgres: applied migration", "version", m.version, "name", m.name)
	}
	return nil
}
