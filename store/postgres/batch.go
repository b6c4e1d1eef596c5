package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

// CreateConnections copies cs and the events into their tables with COPY
// in one transaction: one round trip per table instead of one per row. A
// taken id aborts the COPY as a whole; the transaction is rolled back and
// the ids are looked up to name the first taken one. See
// [store.BatchCreator].
func (s *Store) CreateConnections(ctx context.Context, cs []store.Connection, events []store.Event) error {
	if err := store.CheckBatch(cs); err != nil {
		return fmt.Errorf("store/postgres: create connections: %w", err)
	}
	if len(cs) == 0 {
		return nil
	}
	now := s.now()
	rows := make([][]any, len(cs))
	ids := make([]string, len(cs))
	for i, c := range cs {
		args, err := newRow(c, now)
		if err != nil {
			return &store.ItemError{Index: i, ID: c.ID, Err: err}
		}
		rows[i], ids[i] = args, c.ID
	}
	evRows := make([][]any, len(events))
	for i, e := range events {
		evRows[i] = s.eventRow(e)
	}
	op := fmt.Sprintf("create %d connections", len(cs))
	var taken bool
	err := s.do(ctx, op, false, func(pc *pgxpool.Conn) error {
		taken = false
		w, err := s.beginEvents(ctx, pc, op, events) // checks the events
		if err != nil {
			return err
		}
		defer w.rollback(ctx)
		tx := w.tx
		if tx == nil {
			if tx, err = pc.Begin(ctx); err != nil {
				return s.fail(ctx, op, err)
			}
			w.tx = tx
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"connections"}, newRowColumns, pgx.CopyFromRows(rows)); err != nil {
			err = s.fail(ctx, op, err)
			taken = errors.Is(err, store.ErrAlreadyExists)
			return err
		}
		if len(evRows) > 0 {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"outbox_events"}, eventColumns, pgx.CopyFromRows(evRows)); err != nil {
				return s.fail(ctx, op, err)
			}
		}
		return s.fail(ctx, op, tx.Commit(ctx))
	})
	if err == nil || !taken {
		return err
	}
	// Name the first taken id. If it was deleted meanwhile, the error
	// still says the batch was refused because of a taken id.
	var existing []string
	lookup := s.do(ctx, op, true, func(pc *pgxpool.Conn) error {
		r, err := pc.Query(ctx, `SELECT id FROM connections WHERE id = ANY($1)`, ids)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		existing, err = pgx.CollectRows(r, pgx.RowTo[string])
		return s.fail(ctx, op, err)
	})
	if lookup != nil || len(existing) == 0 {
		return err
	}
	set := make(map[string]bool, len(existing))
	for _, id := range existing {
		set[id] = true
	}
	for i, id := range ids {
		if set[id] {
			return &store.ItemError{Index: i, ID: id, Err: err}
		}
	}
	return err
}
