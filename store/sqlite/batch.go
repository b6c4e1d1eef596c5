package sqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/store"
)

// CreateConnections stores cs and queues events in one transaction, one
// prepared INSERT per row: SQLite has one writer, so the cost is the rows'
// own, not round trips or locks. See [store.BatchCreator].
func (s *Store) CreateConnections(ctx context.Context, cs []store.Connection, events []store.Event) error {
	if err := store.CheckBatch(cs); err != nil {
		return fmt.Errorf("store/sqlite: create connections: %w", err)
	}
	if len(cs) == 0 {
		return nil
	}
	rows := make([][]any, len(cs))
	now := s.now().UnixMicro()
	for i, c := range cs {
		args, err := insertArgs(c, now)
		if err != nil {
			return &store.ItemError{Index: i, ID: c.ID, Err: err}
		}
		rows[i] = args
	}
	op := fmt.Sprintf("create %d connections", len(cs))
	w, err := s.beginEvents(ctx, op, events)
	if err != nil {
		return err
	}
	if w.tx == nil { // no events: the batch still needs its own transaction
		if w.tx, err = s.w.BeginTx(ctx, nil); err != nil {
			return s.fail(ctx, op, err)
		}
	}
	defer w.rollback()
	st, err := w.tx.PrepareContext(ctx, insertConnection)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	defer st.Close()
	for i, args := range rows {
		if _, err := st.ExecContext(ctx, args...); err != nil {
			err = s.fail(ctx, op, err)
			if errors.Is(err, store.ErrAlreadyExists) {
				return &store.ItemError{Index: i, ID: cs[i].ID, Err: err}
			}
			return err
		}
	}
	return s.fail(ctx, op, w.commit(ctx))
}
