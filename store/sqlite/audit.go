package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.AuditLog = (*Store)(nil)

// AppendAudit stores entries in one transaction.
func (s *Store) AppendAudit(ctx context.Context, entries []store.AuditEntry) error {
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("store/sqlite: %w", err)
		}
	}
	if len(entries) == 0 {
		return nil
	}
	const op = "append audit entries"
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	defer func() { _ = tx.Rollback() }()
	now := s.now()
	// Many rows per statement: one statement per row costs most of the
	// time in the driver, not in SQLite.
	for len(entries) > 0 {
		chunk := entries[:min(len(entries), auditRowsPerInsert)]
		entries = entries[len(chunk):]
		var q strings.Builder
		q.WriteString(`INSERT INTO audit_log (at, actor, actor_id, action, connection_id, outcome, detail) VALUES `)
		args := make([]any, 0, 7*len(chunk))
		for i, e := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?, ?, ?, ?, ?, ?, ?)")
			at := e.Time
			if at.IsZero() {
				at = now
			}
			args = append(args, at.UnixMicro(), e.Actor, e.ActorID, e.Action, e.ConnectionID, e.Outcome, e.Detail)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return s.fail(ctx, op, err)
		}
	}
	return s.fail(ctx, op, tx.Commit())
}

// auditRowsPerInsert keeps one statement's parameters (7 a row) well under
// SQLite's limit.
const auditRowsPerInsert = 100

// ListAudit returns matching entries, newest first.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error) {
	limit, err := store.AuditLimit(f.Limit)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
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
		add("at >= ?", f.Since.UnixMicro())
	}
	if !f.Until.IsZero() {
		add("at < ?", f.Until.UnixMicro())
	}
	if f.BeforeID > 0 {
		add("id < ?", f.BeforeID)
	}
	q := `SELECT id, at, actor, actor_id, action, connection_id, outcome, detail FROM audit_log`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.fail(ctx, "list audit entries", err)
	}
	defer rows.Close()
	var out []store.AuditEntry
	for rows.Next() {
		var (
			e  store.AuditEntry
			at int64
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.ActorID, &e.Action, &e.ConnectionID, &e.Outcome, &e.Detail); err != nil {
			return nil, s.fail(ctx, "list audit entries", err)
		}
		e.Time = fromMicros(sql.NullInt64{Int64: at, Valid: true})
		out = append(out, e)
	}
	return out, s.fail(ctx, "list audit entries", rows.Err())
}

// PruneAudit deletes entries older than before.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM audit_log WHERE at < ?`, before.UnixMicro())
	if err != nil {
		return 0, s.fail(ctx, "prune audit entries", err)
	}
	n, err := res.RowsAffected()
	return n, s.fail(ctx, "prune audit entries", err)
}
