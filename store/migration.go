package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrSchemaBehind means the database lacks migrations this build needs
// (a process started with migrations off). Run `tokenbroker
// migrate up` (or start one process with migrations on) first.
var ErrSchemaBehind = errors.New("store: database schema is behind this build; run `tokenbroker migrate up`")

// Migration is one schema migration and whether the database has it.
type Migration struct {
	Version int
	Name    string
	// AppliedAt is when it was applied; zero when pending.
	AppliedAt time.Time
}

// Migrator is a backend whose schema is versioned: both SQL backends.
// `tokenbroker migrate` uses it so a rolling deploy can migrate once,
// before any new replica starts.
type Migrator interface {
	// Migrations lists every migration this build knows, in order, with
	// when each was applied. It never changes the database.
	Migrations(ctx context.Context) ([]Migration, error)
	// MigrateUp applies the pending migrations in one transaction and
	// returns those it applied.
	MigrateUp(ctx context.Context) ([]Migration, error)
}

// CheckSchema fails with [ErrSchemaBehind] when m has pending migrations.
func CheckSchema(ctx context.Context, m Migrator) error {
	ms, err := m.Migrations(ctx)
	if err != nil {
		return err
	}
	for _, x := range ms {
		if x.AppliedAt.IsZero() {
			return fmt.Errorf("migration %s is not applied: %w", x.Name, ErrSchemaBehind)
		}
	}
	return nil
}

// Applied returns the migrations of after that before had not applied
// yet: what a MigrateUp between the two listings applied. Both listings
// are of the same embedded migrations, in the same order.
func Applied(before, after []Migration) []Migration {
	var done []Migration
	for i := range after {
		if before[i].AppliedAt.IsZero() && !after[i].AppliedAt.IsZero() {
			done = append(done, after[i])
		}
	}
	return done
}
