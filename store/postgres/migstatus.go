package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.Migrator = (*Store)(nil)

// appliedMigrations reads schema_migrations; a database that has never
// been migrated has no such table and nothing applied.
func (s *Store) appliedMigrations(ctx context.Context) (map[int]time.Time, error) {
	out := map[int]time.Time{}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, s.fail(ctx, "migrations", err)
	}
	if !exists {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT version, applied_at FROM schema_migrations`)
	if err != nil {
		return nil, s.fail(ctx, "migrations", err)
	}
	type row struct {
		Version   int32
		AppliedAt time.Time
	}
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return nil, s.fail(ctx, "migrations", err)
	}
	for _, r := range rs {
		out[int(r.Version)] = r.AppliedAt.UTC()
	}
	return out, nil
}

// Migrations implements [store.Migrator].
func (s *Store) Migrations(ctx context.Context) ([]store.Migration, error) {
	ms, err := loadMigrations(embeddedMigrations())
	if err != nil {
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	applied, err := s.appliedMigrations(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]store.Migration, 0, len(ms))
	for _, m := range ms {
		out = append(out, store.Migration{Version: m.Version, Name: m.Name, AppliedAt: applied[m.Version]})
	}
	return out, nil
}

// MigrateUp implements [store.Migrator].
func (s *Store) MigrateUp(ctx context.Context) ([]store.Migration, error) {
	before, err := s.Migrations(ctx)
	if err != nil {
		return nil, err
	}
	ms, err := loadMigrations(embeddedMigrations())
	if err != nil {
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	if err := s.migrate(ctx, ms); err != nil {
		return nil, err
	}
	after, err := s.Migrations(ctx)
	if err != nil {
		return nil, err
	}
	return store.Applied(before, after), nil
}
