package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.Outbox = (*Store)(nil)

// eventWriter runs a connection write and queues its events in the same
// transaction. Without events it runs the write on the writer pool
// directly, as before there was an outbox: no transaction is needed.
type eventWriter struct {
	s      *Store
	tx     *sql.Tx
	events []store.Event
}

// beginEvents starts a write that queues events. The caller runs its
// statements on the returned writer, then calls commit, and defers
// rollback. Its errors are in the store's vocabulary.
func (s *Store) beginEvents(ctx context.Context, op string, events []store.Event) (*eventWriter, error) {
	w := &eventWriter{s: s, events: events}
	for _, e := range events {
		if e.Type == "" || e.ConnectionID == "" {
			return nil, fmt.Errorf("store/sqlite: %s: a queued event has no type or connection id", op)
		}
	}
	if len(events) == 0 {
		return w, nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	w.tx = tx
	return w, nil
}

func (w *eventWriter) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if w.tx == nil {
		return w.s.w.QueryRowContext(ctx, query, args...)
	}
	return w.tx.QueryRowContext(ctx, query, args...)
}

func (w *eventWriter) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if w.tx == nil {
		return w.s.w.ExecContext(ctx, query, args...)
	}
	return w.tx.ExecContext(ctx, query, args...)
}

// stmt returns st, bound to the transaction if there is one.
func (w *eventWriter) stmt(ctx context.Context, st *sql.Stmt) *sql.Stmt {
	if w.tx == nil {
		return st
	}
	return w.tx.StmtContext(ctx, st)
}

// commit queues the events and commits. Errors are the driver's.
func (w *eventWriter) commit(ctx context.Context) error {
	if w.tx == nil {
		return nil
	}
	if len(w.events) > 0 {
		// Prepared once: a batch import queues one event per connection.
		st, err := w.tx.PrepareContext(ctx, `INSERT INTO outbox_events (id, type, connection_id, provider, code, at)
			VALUES (?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, e := range w.events {
			if e.At.IsZero() {
				e.At = w.s.now()
			}
			if e.ID == "" {
				e.ID = store.NewEventID(e.At)
			}
			if _, err := st.ExecContext(ctx, e.ID, e.Type, e.ConnectionID, e.Provider, e.Code, e.At.UnixMicro()); err != nil {
				return err
			}
		}
	}
	return w.tx.Commit()
}

func (w *eventWriter) rollback() {
	if w.tx != nil {
		_ = w.tx.Rollback()
	}
}

// endpointsJSON passes a list of names to SQL, where json_each reads it.
func endpointsJSON(endpoints []string) string {
	b, _ := json.Marshal(endpoints) // []string always marshals
	return string(b)
}

// ClaimDeliveries fans out and claims in one IMMEDIATE transaction, which
// SQLite serializes against every other writer, in this process or
// another: two claimers never see the same delivery due.
func (s *Store) ClaimDeliveries(ctx context.Context, owner string, endpoints []string, now time.Time, limit int, lease time.Duration) ([]store.Delivery, error) {
	switch {
	case owner == "":
		return nil, errors.New("store/sqlite: claim deliveries: owner is empty")
	case limit <= 0:
		return nil, fmt.Errorf("store/sqlite: claim deliveries: limit %d is not positive", limit)
	case lease <= 0:
		return nil, fmt.Errorf("store/sqlite: claim deliveries: lease %v is not positive", lease)
	}
	if len(endpoints) == 0 {
		return nil, nil
	}
	limit = min(limit, store.MaxClaim)
	const op = "claim deliveries"
	eps := endpointsJSON(endpoints)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_endpoints (name, since, seen_at)
		SELECT value, ?, ? FROM json_each(?) WHERE true
		ON CONFLICT (name) DO UPDATE SET
			since = CASE WHEN seen_at < ? THEN excluded.since ELSE since END,
			seen_at = excluded.seen_at`,
		now.Add(-store.EndpointStartSlack).UnixMicro(), now.UnixMicro(), eps,
		now.Add(-store.EndpointGoneAfter).UnixMicro()); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO outbox_deliveries (event_id, endpoint, next_attempt_at)
		SELECT e.id, ep.name, ?
		FROM (SELECT id, at FROM outbox_events WHERE fanned_out = 0 ORDER BY id LIMIT ?) e
		JOIN outbox_endpoints ep ON ep.name IN (SELECT value FROM json_each(?)) AND e.at >= ep.since`,
		now.UnixMicro(), store.OutboxFanOutBatch, eps); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE outbox_events SET fanned_out = 1
		WHERE id IN (SELECT id FROM outbox_events WHERE fanned_out = 0 ORDER BY id LIMIT ?)`, store.OutboxFanOutBatch); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	rows, err := tx.QueryContext(ctx, `UPDATE outbox_deliveries
		SET claim_owner = ?, next_attempt_at = ?, attempts = attempts + 1
		WHERE rowid IN (SELECT rowid FROM outbox_deliveries
			WHERE state = 'pending' AND next_attempt_at <= ? AND endpoint IN (SELECT value FROM json_each(?))
			ORDER BY next_attempt_at, event_id LIMIT ?)
		RETURNING event_id, endpoint, attempts`,
		owner, now.Add(lease).UnixMicro(), now.UnixMicro(), eps, limit)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	var out []store.Delivery
	var ids []string
	for rows.Next() {
		var d store.Delivery
		if err := rows.Scan(&d.Event.ID, &d.Endpoint, &d.Attempt); err != nil {
			rows.Close()
			return nil, s.fail(ctx, op, err)
		}
		out = append(out, d)
		ids = append(ids, d.Event.ID)
	}
	if err := rows.Close(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	if len(out) == 0 {
		return nil, s.fail(ctx, op, tx.Commit())
	}
	events, err := queryEvents(ctx, tx, `SELECT `+eventColumns+` FROM outbox_events
		WHERE id IN (SELECT value FROM json_each(?))`, endpointsJSON(ids))
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	byID := make(map[string]store.Event, len(events))
	for _, e := range events {
		byID[e.ID] = e
	}
	for i := range out {
		out[i].Event = byID[out[i].Event.ID]
	}
	if err := tx.Commit(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

const eventColumns = `id, type, connection_id, provider, code, at`

func queryEvents(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, args ...any) ([]store.Event, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		var (
			e  store.Event
			at int64
		)
		if err := rows.Scan(&e.ID, &e.Type, &e.ConnectionID, &e.Provider, &e.Code, &at); err != nil {
			return nil, err
		}
		e.At = time.UnixMicro(at).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// AckDelivery marks the delivery delivered whoever holds its claim.
func (s *Store) AckDelivery(ctx context.Context, eventID, endpoint string) error {
	op := fmt.Sprintf("ack delivery of %q to %q", eventID, endpoint)
	res, err := s.w.ExecContext(ctx, `UPDATE outbox_deliveries
		SET state = 'delivered', claim_owner = '', last_error = '', done_at = ?
		WHERE event_id = ? AND endpoint = ? AND state != 'delivered'`, s.now().UnixMicro(), eventID, endpoint)
	return s.settled(ctx, op, res, err, eventID, endpoint, false)
}

// RetryDelivery makes a delivery owner holds due again at next.
func (s *Store) RetryDelivery(ctx context.Context, eventID, endpoint, owner string, next time.Time, lastError string) error {
	op := fmt.Sprintf("retry delivery of %q to %q", eventID, endpoint)
	res, err := s.w.ExecContext(ctx, `UPDATE outbox_deliveries
		SET claim_owner = '', next_attempt_at = ?, last_error = ?
		WHERE event_id = ? AND endpoint = ? AND state = 'pending' AND claim_owner = ? AND claim_owner != ''`,
		next.UnixMicro(), lastError, eventID, endpoint, owner)
	return s.settled(ctx, op, res, err, eventID, endpoint, true)
}

// AbandonDelivery gives up a delivery owner holds.
func (s *Store) AbandonDelivery(ctx context.Context, eventID, endpoint, owner, lastError string) error {
	op := fmt.Sprintf("abandon delivery of %q to %q", eventID, endpoint)
	res, err := s.w.ExecContext(ctx, `UPDATE outbox_deliveries
		SET state = 'abandoned', claim_owner = '', last_error = ?, done_at = ?
		WHERE event_id = ? AND endpoint = ? AND state = 'pending' AND claim_owner = ? AND claim_owner != ''`,
		lastError, s.now().UnixMicro(), eventID, endpoint, owner)
	return s.settled(ctx, op, res, err, eventID, endpoint, true)
}

// settled interprets an UPDATE of one delivery: when it matched nothing,
// the delivery is missing (ErrNotFound), or, for claim-checked updates,
// held by someone else or finished (ErrConflict); an ack of a delivered
// delivery is fine.
func (s *Store) settled(ctx context.Context, op string, res sql.Result, err error, eventID, endpoint string, claimed bool) error {
	if err != nil {
		return s.fail(ctx, op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if n > 0 {
		return nil
	}
	var one int
	err = s.r.QueryRowContext(ctx, `SELECT 1 FROM outbox_deliveries WHERE event_id = ? AND endpoint = ?`, eventID, endpoint).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("store/sqlite: %s: %w", op, store.ErrNotFound)
	case err != nil:
		return s.fail(ctx, op, err)
	case claimed:
		return fmt.Errorf("store/sqlite: %s: the claim is no longer held: %w", op, store.ErrConflict)
	}
	return nil
}

// OutboxBacklog counts pending deliveries.
func (s *Store) OutboxBacklog(ctx context.Context) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM outbox_deliveries WHERE state = 'pending'`).Scan(&n)
	return n, s.fail(ctx, "outbox backlog", err)
}

// ConnectionEvents returns the connection's latest events, newest first. A
// zero limit means 50; more than 500 means 500.
func (s *Store) ConnectionEvents(ctx context.Context, connectionID string, limit int) ([]store.Event, error) {
	limit, err := store.EventsLimit(limit)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	out, err := queryEvents(ctx, s.r, `SELECT `+eventColumns+` FROM outbox_events
		WHERE connection_id = ? ORDER BY at DESC, id DESC LIMIT ?`, connectionID, limit)
	if err != nil {
		return nil, s.fail(ctx, fmt.Sprintf("events of connection %q", connectionID), err)
	}
	return out, nil
}

// PruneOutbox deletes events older than before; their deliveries go with
// them (ON DELETE CASCADE).
func (s *Store) PruneOutbox(ctx context.Context, before time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM outbox_events WHERE at < ?`, before.UnixMicro())
	if err != nil {
		return 0, s.fail(ctx, "prune outbox", err)
	}
	n, err := res.RowsAffected()
	return int(n), s.fail(ctx, "prune outbox", err)
}
