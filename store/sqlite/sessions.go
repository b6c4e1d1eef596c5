package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.Sessions = (*Store)(nil)

// CreateUISession stores a dashboard session.
func (s *Store) CreateUISession(ctx context.Context, us store.UISession) error {
	if us.ID == "" || us.KeyID == "" || us.ExpiresAt.IsZero() {
		return errors.New("store/sqlite: ui session: id, key id and expiry are required")
	}
	created := us.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO ui_sessions (id, key_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
		us.ID, us.KeyID, created.UnixMicro(), us.ExpiresAt.UnixMicro())
	return s.fail(ctx, "create ui session", err)
}

// GetUISession returns [store.ErrNotFound] for unknown, ended and expired
// sessions.
func (s *Store) GetUISession(ctx context.Context, id string) (store.UISession, error) {
	var (
		us               store.UISession
		created, expires int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT id, key_id, created_at, expires_at FROM ui_sessions WHERE id = ? AND expires_at > ?`,
		id, s.now().UnixMicro()).Scan(&us.ID, &us.KeyID, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return store.UISession{}, fmt.Errorf("store/sqlite: ui session: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.UISession{}, s.fail(ctx, "get ui session", err)
	}
	us.CreatedAt = fromMicros(sql.NullInt64{Int64: created, Valid: true})
	us.ExpiresAt = fromMicros(sql.NullInt64{Int64: expires, Valid: true})
	return us, nil
}

// DeleteUISession ends one session.
func (s *Store) DeleteUISession(ctx context.Context, id string) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM ui_sessions WHERE id = ?`, id)
	return s.fail(ctx, "delete ui session", err)
}

// DeleteKeyUISessions ends every session of a key.
func (s *Store) DeleteKeyUISessions(ctx context.Context, keyID string) (int64, error) {
	return s.deleteSessions(ctx, "delete ui sessions of key", `DELETE FROM ui_sessions WHERE key_id = ?`, keyID)
}

// PruneUISessions deletes expired sessions.
func (s *Store) PruneUISessions(ctx context.Context) (int64, error) {
	return s.deleteSessions(ctx, "prune ui sessions", `DELETE FROM ui_sessions WHERE expires_at <= ?`, s.now().UnixMicro())
}

func (s *Store) deleteSessions(ctx context.Context, op, q string, arg any) (int64, error) {
	res, err := s.w.ExecContext(ctx, q, arg)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	n, err := res.RowsAffected()
	return n, s.fail(ctx, op, err)
}
