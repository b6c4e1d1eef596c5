package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.Migrator = (*Store)(nil)

// appliedMigrations reads schema_migrations; a database that has never
// been migrated has no such table and nothing applied.
func appliedMigrations(ctx context.Context, db *sql.DB) (map[int]time.Time, error) {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return nil, classify(err)
	}
	out := map[int]time.Time{}
	if n == 0 {
		return out, nil
	}
	rows, err := db.QueryContext(ctx, `SELECT version, applied_at FROM schema_migrations`)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		var v int
		var at int64
		if err := rows.Scan(&v, &at); err != nil {
			return nil, classify(err)
		}
		out[v] = time.UnixMicro(at).UTC()
	}
	return out, classify(rows.Err())
}

// Migrations implements [store.Migrator].
func (s *Store) Migrations(ctx context.Context) ([]store.Migration, error) {
	ms, err := loadMigrations(embeddedMigrations())
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	applied, err := appliedMigrations(ctx, s.w)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: migrations: %w", err)
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
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	if err := migrate(ctx, s.w, ms, s.now, s.log); err != nil {
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	if s.getStmt == nil {
		if err := s.prepare(ctx); err != nil {
			return nil, fmt.Errorf("store/sqlite: %w", err)
		}
	}
	after, err := s.Migrations(ctx)
	if err != nil {
		return nil, err
	}
	return store.Applied(before, after), nil
}
