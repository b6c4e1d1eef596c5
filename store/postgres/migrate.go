package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"

	"github.com/tokenbroker/tokenbroker/store/internal/migrations"
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

type migration = migrations.Migration

// migrateLockKey is the pg_advisory_lock key every tokenbroker process
// takes while migrating ("tokenbrk" in ASCII). Advisory locks are scoped to
// the current database, so tokenbroker databases on one server do not wait
// for each other.
const migrateLockKey int64 = 0x746f6b656e62726b

// loadMigrations reads the backend's migrations in version order.
func loadMigrations(fsys fs.FS) ([]migration, error) { return migrations.Load(fsys) }

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
	latest := migrations[len(migrations)-1].Version
	for _, v := range versions {
		if int(v) > latest {
			return fmt.Errorf("store/postgres: migrate: database schema version %d is newer than this build knows (%d); upgrade tokenbroker", v, latest)
		}
		applied[int(v)] = true
	}
	for _, m := range migrations {
		if applied[m.Version] {
			continue
		}
		// No arguments: pgx sends it with the simple protocol, which
		// allows several statements in one string.
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return s.fail(ctx, "migrate: "+m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			m.Version, m.Name, stored(s.now())); err != nil {
			return s.fail(ctx, "migrate: "+m.Name, err)
		}
		s.log.InfoContext(ctx, "store/postgres: applied migration", "version", m.Version, "name", m.Name)
	}
	return nil
}
