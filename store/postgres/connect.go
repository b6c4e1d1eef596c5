package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.ConnectSessions = (*Store)(nil)

const connectSessionColumns = `id, connection_id, provider, redirect_url, scopes, state_hash, verifier, expires_at, created_at, mcp`

func scanConnectSession(row pgx.Row) (store.ConnectSession, error) {
	var (
		cs               store.ConnectSession
		scopes           string
		expires, created time.Time
		mcpJSON          []byte
	)
	if err := row.Scan(&cs.ID, &cs.ConnectionID, &cs.Provider, &cs.RedirectURL, &scopes,
		&cs.StateHash, &cs.Verifier, &expires, &created, &mcpJSON); err != nil {
		return store.ConnectSession{}, err
	}
	m, err := store.DecodeMCP(cs.ConnectionID, []byte(mcpJSON))
	if err != nil {
		return store.ConnectSession{}, err
	}
	cs.MCP = m
	cs.Scopes = strings.Fields(scopes)
	cs.ExpiresAt = expires.UTC()
	cs.CreatedAt = created.UTC()
	return cs, nil
}

func sessionNotFound() error {
	return fmt.Errorf("store/postgres: connect session: %w", store.ErrNotFound)
}

// CreateConnectSession stores cs. Returns [store.ErrAlreadyExists] if the id
// is taken.
func (s *Store) CreateConnectSession(ctx context.Context, cs store.ConnectSession) error {
	if err := cs.Validate(); err != nil {
		return fmt.Errorf("store/postgres: %w", err)
	}
	for _, f := range []struct{ name, v string }{
		{"id", cs.ID}, {"connection id", cs.ConnectionID}, {"provider", cs.Provider},
		{"redirect url", cs.RedirectURL}, {"scopes", strings.Join(cs.Scopes, " ")},
	} {
		if !storableID(f.v) {
			return fmt.Errorf("store/postgres: connect session: %s is not valid UTF-8 text without NUL", f.name)
		}
	}
	mcp, err := store.EncodeMCP(cs.ConnectionID, cs.MCP)
	if err != nil {
		return fmt.Errorf("store/postgres: connect session: %w", err)
	}
	created := cs.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	const op = "create connect session"
	return s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, `INSERT INTO connect_sessions (`+connectSessionColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			cs.ID, cs.ConnectionID, cs.Provider, cs.RedirectURL, strings.Join(cs.Scopes, " "),
			blob(cs.StateHash), blob(cs.Verifier), stored(cs.ExpiresAt), stored(created), blob(mcp))
		return s.fail(ctx, op, err)
	})
}

// BeginConnectSession records a new authorization request's state hash and
// sealed verifier on session id. Returns [store.ErrNotFound] if there is no
// such session.
func (s *Store) BeginConnectSession(ctx context.Context, id string, stateHash, verifier []byte) (store.ConnectSession, error) {
	if len(stateHash) == 0 || len(verifier) == 0 {
		return store.ConnectSession{}, errors.New("store/postgres: begin connect session: state hash and verifier are required")
	}
	if !storableID(id) {
		return store.ConnectSession{}, sessionNotFound()
	}
	const op = "begin connect session"
	var out store.ConnectSession
	err := s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		var err error
		out, err = scanConnectSession(conn.QueryRow(ctx, `UPDATE connect_sessions
			SET state_hash = $2, verifier = $3 WHERE id = $1
			RETURNING `+connectSessionColumns, id, stateHash, verifier))
		if errors.Is(err, pgx.ErrNoRows) {
			return sessionNotFound()
		}
		return s.fail(ctx, op, err)
	})
	return out, err
}

// ConsumeConnectSession deletes and returns the session with this state
// hash in one statement, so only one caller ever gets it. Returns
// [store.ErrNotFound] if there is none.
func (s *Store) ConsumeConnectSession(ctx context.Context, stateHash []byte) (store.ConnectSession, error) {
	if len(stateHash) == 0 {
		return store.ConnectSession{}, sessionNotFound()
	}
	const op = "consume connect session"
	var out store.ConnectSession
	err := s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		var err error
		out, err = scanConnectSession(conn.QueryRow(ctx,
			`DELETE FROM connect_sessions WHERE state_hash = $1 RETURNING `+connectSessionColumns, stateHash))
		if errors.Is(err, pgx.ErrNoRows) {
			return sessionNotFound()
		}
		return s.fail(ctx, op, err)
	})
	return out, err
}

// DeleteExpiredConnectSessions deletes sessions that expired before now.
func (s *Store) DeleteExpiredConnectSessions(ctx context.Context, now time.Time) (int, error) {
	const op = "delete expired connect sessions"
	var n int64
	err := s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		tag, err := conn.Exec(ctx, `DELETE FROM connect_sessions WHERE expires_at < $1`, stored(now))
		if err != nil {
			return s.fail(ctx, op, err)
		}
		n = tag.RowsAffected()
		return nil
	})
	return int(n), err
}
