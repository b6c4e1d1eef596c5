package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.Sessions = (*Store)(nil)

// CreateUISession stores a dashboard session.
func (s *Store) CreateUISession(ctx context.Context, us store.UISession) error {
	if us.ID == "" || us.KeyID == "" || us.ExpiresAt.IsZero() {
		return errors.New("store/postgres: ui session: id, key id and expiry are required")
	}
	if !storableID(us.ID) || !storableID(us.KeyID) {
		return errors.New("store/postgres: ui session: id or key id is not valid UTF-8 text without NUL")
	}
	created := us.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	return s.do(ctx, "create ui session", false, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, `INSERT INTO ui_sessions (id, key_id, created_at, expires_at) VALUES ($1, $2, $3, $4)`,
			us.ID, us.KeyID, stored(created), stored(us.ExpiresAt))
		return s.fail(ctx, "create ui session", err)
	})
}

// GetUISession returns [store.ErrNotFound] for unknown, ended and expired
// sessions.
func (s *Store) GetUISession(ctx context.Context, id string) (store.UISession, error) {
	notFound := fmt.Errorf("store/postgres: ui session: %w", store.ErrNotFound)
	if !storableID(id) {
		return store.UISession{}, notFound
	}
	var us store.UISession
	err := s.do(ctx, "get ui session", true, func(conn *pgxpool.Conn) error {
		err := conn.QueryRow(ctx, `SELECT id, key_id, created_at, expires_at FROM ui_sessions WHERE id = $1 AND expires_at > $2`,
			id, stored(s.now())).Scan(&us.ID, &us.KeyID, &us.CreatedAt, &us.ExpiresAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound
		}
		return s.fail(ctx, "get ui session", err)
	})
	us.CreatedAt, us.ExpiresAt = us.CreatedAt.UTC(), us.ExpiresAt.UTC()
	return us, err
}

// DeleteUISession ends one session.
func (s *Store) DeleteUISession(ctx context.Context, id string) error {
	if !storableID(id) {
		return nil
	}
	_, err := s.deleteSessions(ctx, "delete ui session", `DELETE FROM ui_sessions WHERE id = $1`, id)
	return err
}

// DeleteKeyUISessions ends every session of a key.
func (s *Store) DeleteKeyUISessions(ctx context.Context, keyID string) (int64, error) {
	if !storableID(keyID) {
		return 0, nil
	}
	return s.deleteSessions(ctx, "delete ui sessions of key", `DELETE FROM ui_sessions WHERE key_id = $1`, keyID)
}

// PruneUISessions deletes expired sessions.
func (s *Store) PruneUISessions(ctx context.Context) (int64, error) {
	return s.deleteSessions(ctx, "prune ui sessions", `DELETE FROM ui_sessions WHERE expires_at <= $1`, stored(s.now()))
}

func (s *Store) deleteSessions(ctx context.Context, op, q string, arg any) (int64, error) {
	var n int64
	err := s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		tag, err := conn.Exec(ctx, q, arg)
		n = tag.RowsAffected()
		return s.fail(ctx, op, err)
	})
	return n, err
}
