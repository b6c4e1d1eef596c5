package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.Outbox = (*Store)(nil)

// querier is what a connection write needs: a pooled connection or a
// transaction on one.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// eventWriter runs a connection write and queues its events in the same
// transaction. Without events it runs the write on the connection directly,
// as before there was an outbox: no transaction (and no extra round trips)
// is needed.
type eventWriter struct {
	querier
	s      *Store
	op     string
	tx     pgx.Tx
	events []store.Event
}

// beginEvents starts a write on conn that queues events. The caller runs
// its statements on the returned writer, then calls commit, and defers
// rollback. Its errors are in the store's vocabulary. The transaction
// commits in the write's last statement, so [Store.do]'s rule (a retry
// never repeats a write that succeeded) still holds.
func (s *Store) beginEvents(ctx context.Context, conn *pgxpool.Conn, op string, events []store.Event) (*eventWriter, error) {
	w := &eventWriter{querier: conn, s: s, op: op, events: events}
	for _, e := range events {
		if e.Type == "" || e.ConnectionID == "" {
			return nil, fmt.Errorf("store/postgres: %s: a queued event has no type or connection id", op)
		}
		if !storableText(e.ID, e.Type, e.ConnectionID, e.Provider, e.Code) {
			return nil, fmt.Errorf("store/postgres: %s: a queued event has text that is not UTF-8 or holds NUL", op)
		}
	}
	if len(events) == 0 {
		return w, nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	w.querier, w.tx = tx, tx
	return w, nil
}

// commit queues the events and commits, if err (the write's outcome) is
// nil; otherwise it returns err and the deferred rollback undoes the write.
func (w *eventWriter) commit(ctx context.Context, err error) error {
	if err != nil || w.tx == nil {
		return err
	}
	for _, e := range w.events {
		if _, err := w.tx.Exec(ctx, `INSERT INTO outbox_events (`+strings.Join(eventColumns, ", ")+`)
			VALUES ($1, $2, $3, $4, $5, $6)`, w.s.eventRow(e)...); err != nil {
			return w.s.fail(ctx, w.op, err)
		}
	}
	return w.s.fail(ctx, w.op, w.tx.Commit(ctx))
}

// eventColumns are the outbox_events columns of eventRow's values.
var eventColumns = []string{"id", "type", "connection_id", "provider", "code", "at"}

// eventRow is e's row in eventColumns' order, stamped with the store's now
// and a new id when it has none.
func (s *Store) eventRow(e store.Event) []any {
	if e.At.IsZero() {
		e.At = s.now()
	}
	if e.ID == "" {
		e.ID = store.NewEventID(e.At)
	}
	return []any{e.ID, e.Type, e.ConnectionID, e.Provider, e.Code, stored(e.At)}
}

func (w *eventWriter) rollback(ctx context.Context) {
	if w.tx != nil {
		_ = w.tx.Rollback(context.WithoutCancel(ctx))
	}
}

func storableText(ss ...string) bool {
	for _, s := range ss {
		if !storableID(s) {
			return false
		}
	}
	return true
}

// cleanText makes free text (a receiver's error) storable in a text column.
func cleanText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// ClaimDeliveries fans out and claims in one transaction. Both steps lock
// the rows they take with FOR UPDATE SKIP LOCKED, so replicas claiming at
// the same moment take different rows instead of waiting for each other,
// and a delivery another replica has just claimed no longer matches "due"
// once its claim commits.
func (s *Store) ClaimDeliveries(ctx context.Context, owner string, endpoints []string, now time.Time, limit int, lease time.Duration) ([]store.Delivery, error) {
	switch {
	case owner == "":
		return nil, errors.New("store/postgres: claim deliveries: owner is empty")
	case limit <= 0:
		return nil, fmt.Errorf("store/postgres: claim deliveries: limit %d is not positive", limit)
	case lease <= 0:
		return nil, fmt.Errorf("store/postgres: claim deliveries: lease %v is not positive", lease)
	case !storableText(append([]string{owner}, endpoints...)...):
		return nil, errors.New("store/postgres: claim deliveries: owner and endpoint names must be UTF-8 text without NUL")
	}
	if len(endpoints) == 0 {
		return nil, nil
	}
	limit = min(limit, store.MaxClaim)
	const op = "claim deliveries"
	var out []store.Delivery
	err := s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		out = nil
		tx, err := conn.Begin(ctx)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		{
			if _, err := tx.Exec(ctx, `INSERT INTO outbox_endpoints (name, since, seen_at)
				SELECT ep, $2, $3 FROM unnest($1::text[]) ep
				ON CONFLICT (name) DO UPDATE SET
					since = CASE WHEN outbox_endpoints.seen_at < $4 THEN excluded.since ELSE outbox_endpoints.since END,
					seen_at = excluded.seen_at`,
				endpoints, stored(now.Add(-store.EndpointStartSlack)), stored(now), stored(now.Add(-store.EndpointGoneAfter))); err != nil {
				return s.fail(ctx, op, err)
			}
			if _, err := tx.Exec(ctx, `WITH fresh AS (
					SELECT id, at FROM outbox_events WHERE NOT fanned_out
					ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
				), fanned AS (
					INSERT INTO outbox_deliveries (event_id, endpoint, next_attempt_at)
					SELECT f.id, ep.name, $2 FROM fresh f
					JOIN outbox_endpoints ep ON ep.name = ANY($1::text[]) AND f.at >= ep.since
					ON CONFLICT DO NOTHING
				)
				UPDATE outbox_events SET fanned_out = true WHERE id IN (SELECT id FROM fresh)`,
				endpoints, stored(now), store.OutboxFanOutBatch); err != nil {
				return s.fail(ctx, op, err)
			}
			rows, err := tx.Query(ctx, `UPDATE outbox_deliveries d
				SET claim_owner = $1, next_attempt_at = $2, attempts = d.attempts + 1
				FROM (SELECT event_id, endpoint FROM outbox_deliveries
					WHERE state = 'pending' AND next_attempt_at <= $3 AND endpoint = ANY($4::text[])
					ORDER BY next_attempt_at, event_id LIMIT $5 FOR UPDATE SKIP LOCKED) c,
					outbox_events e
				WHERE d.event_id = c.event_id AND d.endpoint = c.endpoint AND e.id = d.event_id
				RETURNING e.id, e.type, e.connection_id, e.provider, e.code, e.at, d.endpoint, d.attempts`,
				owner, stored(now.Add(lease)), stored(now), endpoints, limit)
			if err != nil {
				return s.fail(ctx, op, err)
			}
			out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Delivery, error) {
				var d store.Delivery
				err := r.Scan(&d.Event.ID, &d.Event.Type, &d.Event.ConnectionID, &d.Event.Provider, &d.Event.Code, &d.Event.At,
					&d.Endpoint, &d.Attempt)
				d.Event.At = d.Event.At.UTC()
				return d, err
			})
			if err != nil {
				return s.fail(ctx, op, err)
			}
		}
		return s.fail(ctx, op, tx.Commit(ctx))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AckDelivery marks the delivery delivered whoever holds its claim.
func (s *Store) AckDelivery(ctx context.Context, eventID, endpoint string) error {
	return s.settle(ctx, fmt.Sprintf("ack delivery of %q to %q", eventID, endpoint), eventID, endpoint, false,
		`UPDATE outbox_deliveries SET state = 'delivered', claim_owner = '', last_error = '', done_at = $3
		WHERE event_id = $1 AND endpoint = $2 AND state != 'delivered'`, stored(s.now()))
}

// RetryDelivery makes a delivery owner holds due again at next.
func (s *Store) RetryDelivery(ctx context.Context, eventID, endpoint, owner string, next time.Time, lastError string) error {
	return s.settle(ctx, fmt.Sprintf("retry delivery of %q to %q", eventID, endpoint), eventID, endpoint, true,
		`UPDATE outbox_deliveries SET claim_owner = '', next_attempt_at = $4, last_error = $5
		WHERE event_id = $1 AND endpoint = $2 AND state = 'pending' AND claim_owner = $3 AND claim_owner != ''`,
		cleanText(owner), stored(next), cleanText(lastError))
}

// AbandonDelivery gives up a delivery owner holds.
func (s *Store) AbandonDelivery(ctx context.Context, eventID, endpoint, owner, lastError string) error {
	return s.settle(ctx, fmt.Sprintf("abandon delivery of %q to %q", eventID, endpoint), eventID, endpoint, true,
		`UPDATE outbox_deliveries SET state = 'abandoned', claim_owner = '', last_error = $4, done_at = $5
		WHERE event_id = $1 AND endpoint = $2 AND state = 'pending' AND claim_owner = $3 AND claim_owner != ''`,
		cleanText(owner), cleanText(lastError), stored(s.now()))
}

// settle runs an UPDATE of one delivery ($1 event id, $2 endpoint, then
// args). When it matches nothing, the delivery is missing (ErrNotFound),
// or, for claim-checked updates, held by someone else or finished
// (ErrConflict); acking a delivered delivery is fine.
func (s *Store) settle(ctx context.Context, op, eventID, endpoint string, claimed bool, query string, args ...any) error {
	if !storableText(eventID, endpoint) {
		return fmt.Errorf("store/postgres: %s: %w", op, store.ErrNotFound)
	}
	return s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		// The existence check runs first so that the UPDATE is the last
		// statement: do may then retry safely.
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox_deliveries WHERE event_id = $1 AND endpoint = $2)`,
			eventID, endpoint).Scan(&exists); err != nil {
			return s.fail(ctx, op, err)
		}
		if !exists {
			return fmt.Errorf("store/postgres: %s: %w", op, store.ErrNotFound)
		}
		tag, err := conn.Exec(ctx, query, append([]any{eventID, endpoint}, args...)...)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if tag.RowsAffected() == 0 && claimed {
			return fmt.Errorf("store/postgres: %s: the claim is no longer held: %w", op, store.ErrConflict)
		}
		return nil
	})
}

// OutboxBacklog counts pending deliveries.
func (s *Store) OutboxBacklog(ctx context.Context) (int, error) {
	var n int
	err := s.do(ctx, "outbox backlog", true, func(conn *pgxpool.Conn) error {
		return s.fail(ctx, "outbox backlog", conn.QueryRow(ctx, `SELECT count(*) FROM outbox_deliveries WHERE state = 'pending'`).Scan(&n))
	})
	return n, err
}

// ConnectionEvents returns the connection's latest events, newest first. A
// zero limit means 50; more than 500 means 500.
func (s *Store) ConnectionEvents(ctx context.Context, connectionID string, limit int) ([]store.Event, error) {
	limit, err := store.EventsLimit(limit)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	if !storableID(connectionID) {
		return nil, nil
	}
	op := fmt.Sprintf("events of connection %q", connectionID)
	var out []store.Event
	err = s.do(ctx, op, true, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT id, type, connection_id, provider, code, at FROM outbox_events
			WHERE connection_id = $1 ORDER BY at DESC, id DESC LIMIT $2`, connectionID, limit)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Event, error) {
			var e store.Event
			err := r.Scan(&e.ID, &e.Type, &e.ConnectionID, &e.Provider, &e.Code, &e.At)
			e.At = e.At.UTC()
			return e, err
		})
		return s.fail(ctx, op, err)
	})
	return out, err
}

// PruneOutbox deletes events older than before; their deliveries go with
// them (ON DELETE CASCADE).
func (s *Store) PruneOutbox(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.do(ctx, "prune outbox", false, func(conn *pgxpool.Conn) error {
		tag, err := conn.Exec(ctx, `DELETE FROM outbox_events WHERE at < $1`, stored(before))
		n = tag.RowsAffected()
		return s.fail(ctx, "prune outbox", err)
	})
	return int(n), err
}
