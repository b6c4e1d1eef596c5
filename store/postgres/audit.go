package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.AuditLog = (*Store)(nil)

// AppendAudit stores entries in one statement (COPY would need a
// transaction of its own; a batch of a few hundred rows is one round trip
// either way).
func (s *Store) AppendAudit(ctx context.Context, entries []store.AuditEntry) error {
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("store/postgres: %w", err)
		}
		for _, v := range []string{e.Actor, e.ActorID, e.Action, e.ConnectionID, e.Outcome, e.Detail} {
			if !storableID(v) {
				return fmt.Errorf("store/postgres: audit entry: a field is not valid UTF-8 text without NUL")
			}
		}
	}
	if len(entries) == 0 {
		return nil
	}
	const op = "append audit entries"
	now := s.now()
	n := len(entries)
	at := make([]time.Time, n)
	cols := make([][]string, 6)
	for i := range cols {
		cols[i] = make([]string, n)
	}
	for i, e := range entries {
		at[i] = e.Time
		if at[i].IsZero() {
			at[i] = now
		}
		at[i] = stored(at[i])
		cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i] = e.Actor, e.ActorID, e.Action, e.ConnectionID, e.Outcome, e.Detail
	}
	return s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, `INSERT INTO audit_log (at, actor, actor_id, action, connection_id, outcome, detail)
			SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])`,
			at, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5])
		return s.fail(ctx, op, err)
	})
}

// ListAudit returns matching entries, newest first.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error) {
	limit, err := store.AuditLimit(f.Limit)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	for _, v := range []string{f.ConnectionID, f.Actor, f.Action} {
		if !storableID(v) {
			return nil, nil // nothing stored can match
		}
	}
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.ConnectionID != "" {
		add("connection_id = ?", f.ConnectionID)
	}
	if f.Actor != "" {
		add("actor = ?", f.Actor)
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if !f.Since.IsZero() {
		add("at >= ?", stored(f.Since))
	}
	if !f.Until.IsZero() {
		add("at < ?", stored(f.Until))
	}
	if f.BeforeID > 0 {
		add("id < ?", f.BeforeID)
	}
	q := `SELECT id, at, actor, actor_id, action, connection_id, outcome, detail FROM audit_log`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit)
	q += " ORDER BY id DESC LIMIT $" + strconv.Itoa(len(args))
	var out []store.AuditEntry
	err = s.do(ctx, "list audit entries", true, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, q, args...)
		if err != nil {
			return s.fail(ctx, "list audit entries", err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.AuditEntry, error) {
			var e store.AuditEntry
			err := r.Scan(&e.ID, &e.Time, &e.Actor, &e.ActorID, &e.Action, &e.ConnectionID, &e.Outcome, &e.Detail)
			e.Time = e.Time.UTC()
			return e, err
		})
		return s.fail(ctx, "list audit entries", err)
	})
	return out, err
}

// PruneAudit deletes entries older than before.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.do(ctx, "prune audit entries", false, func(conn *pgxpool.Conn) error {
		tag, err := conn.Exec(ctx, `DELETE FROM audit_log WHERE at < $1`, stored(before))
		n = tag.RowsAffected()
		return s.fail(ctx, "prune audit entries", err)
	})
	return n, err
}
