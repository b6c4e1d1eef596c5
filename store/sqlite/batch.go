package sqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/store"
)

const batchInsert = `INSERT INTO connections (id, ` + dataColumns + `,
	version, lease_owner, lease_until, created_at, updated_at, grant_type, next_refresh_at,
	issued_at, incarnation, on_error_refresh_at, refresh_started_at, mcp)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, '', NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

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
		args, err := dataArgs(c)
		if err == nil {
			var mcp []byte
			if mcp, err = store.EncodeMCP(c.ID, c.MCP); err == nil {
				args = append([]any{c.ID}, args...)
				rows[i] = append(args, now, now, c.Grant, micros(c.NextRefreshAt), micros(c.IssuedAt), store.NewIncarnation(),
					micros(c.OnErrorRefreshAt), micros(c.RefreshStartedAt), text(mcp))
			}
		}
		if err != nil {
			return &store.ItemError{Index: i, ID: c.ID, Err: err}
		}
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
	st, err := w.tx.PrepareContext(ctx, batchInsert)
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
