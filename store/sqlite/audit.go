package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math/bits"
	"strings"
	"sync"
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
	// Many rows per statement: one statement per row costs most of the
	// time in the driver, not in SQLite. The statements are prepared once
	// for a few fixed row counts (powers of two), so that a batch is a
	// handful of executions and no SQL parsing: parsing a fresh 100-row
	// INSERT per batch cost as much CPU as storing its rows (BENCHMARKS.md,
	// "Audit trail"). They are prepared before the transaction begins,
	// because the writer pool has a single connection.
	var stmts [auditSizes]*sql.Stmt
	for rest := len(entries); rest > 0; {
		i := auditSizeFor(rest)
		if stmts[i] == nil {
			st, err := s.audit.get(ctx, s.w, i)
			if err != nil {
				return s.fail(ctx, op, err)
			}
			stmts[i] = st
		}
		rest -= 1 << i
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	defer func() { _ = tx.Rollback() }()
	now := s.now().UnixMicro()
	args := make([]any, 0, auditColumns<<(auditSizes-1))
	for len(entries) > 0 {
		i := auditSizeFor(len(entries))
		chunk := entries[:1<<i]
		entries = entries[len(chunk):]
		args = args[:0]
		for _, e := range chunk {
			at := now
			if !e.Time.IsZero() {
				at = e.Time.UnixMicro()
			}
			args = append(args, at, e.Actor, e.ActorID, e.Action, e.ConnectionID, e.Outcome, e.Detail)
		}
		if _, err := tx.StmtContext(ctx, stmts[i]).ExecContext(ctx, args...); err != nil {
			return s.fail(ctx, op, err)
		}
	}
	return s.fail(ctx, op, tx.Commit())
}

const (
	// auditSizes is how many prepared INSERTs there are: of 1, 2, 4, …,
	// 256 rows. 256 rows of 7 parameters stay well under SQLite's limit
	// of 32766 parameters per statement.
	auditSizes   = 9
	auditColumns = 7
)

// auditSizeFor is the index of the largest prepared INSERT that n rows
// fill: floor(log2(n)), at most auditSizes-1.
func auditSizeFor(n int) int {
	return min(bits.Len(uint(n))-1, auditSizes-1)
}

// auditStmts prepares the audit INSERTs on first use: the tables may be
// created after Open (Options.SkipMigrate).
type auditStmts struct {
	mu    sync.Mutex
	stmts [auditSizes]*sql.Stmt
}

func (a *auditStmts) get(ctx context.Context, db *sql.DB, i int) (*sql.Stmt, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.stmts[i]; st != nil {
		return st, nil
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO audit_log (at, actor, actor_id, action, connection_id, outcome, detail) VALUES `)
	for r := range 1 << i {
		if r > 0 {
			q.WriteByte(',')
		}
		q.WriteString("(?, ?, ?, ?, ?, ?, ?)")
	}
	st, err := db.PrepareContext(ctx, q.String())
	if err != nil {
		return nil, err
	}
	a.stmts[i] = st
	return st, nil
}

func (a *auditStmts) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, st := range a.stmts {
		if st != nil {
			_ = st.Close()
			a.stmts[i] = nil
		}
	}
}

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
