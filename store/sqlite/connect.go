package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.ConnectSessions = (*Store)(nil)

const connectSessionColumns = `id, connection_id, provider, redirect_url, scopes, state_hash, verifier, expires_at, created_at, mcp`

func scanConnectSession(row interface{ Scan(...any) error }) (store.ConnectSession, error) {
	var (
		cs               store.ConnectSession
		scopes           string
		expires, created int64
		mcpJSON          sql.NullString
	)
	if err := row.Scan(&cs.ID, &cs.ConnectionID, &cs.Provider, &cs.RedirectURL, &scopes,
		&cs.StateHash, &cs.Verifier, &expires, &created, &mcpJSON); err != nil {
		return store.ConnectSession{}, err
	}
	m, err := store.DecodeMCP(cs.ConnectionID, []byte(mcpJSON.String))
	if err != nil {
		return store.ConnectSession{}, err
	}
	cs.MCP = m
	cs.Scopes = strings.Fields(scopes)
	cs.ExpiresAt = fromMicros(sql.NullInt64{Int64: expires, Valid: true})
	cs.CreatedAt = fromMicros(sql.NullInt64{Int64: created, Valid: true})
	return cs, nil
}

func sessionNotFound() error {
	return fmt.Errorf("store/sqlite: connect session: %w", store.ErrNotFound)
}

// CreateConnectSession stores cs. Returns [store.ErrAlreadyExists] if the id
// is taken.
func (s *Store) CreateConnectSession(ctx context.Context, cs store.ConnectSession) error {
	if err := cs.Validate(); err != nil {
		return fmt.Errorf("store/sqlite: %w", err)
	}
	mcp, err := store.EncodeMCP(cs.ConnectionID, cs.MCP)
	if err != nil {
		return fmt.Errorf("store/sqlite: connect session: %w", err)
	}
	created := cs.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO connect_sessions (`+connectSessionColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		cs.ID, cs.ConnectionID, cs.Provider, cs.RedirectURL, strings.Join(cs.Scopes, " "),
		blob(cs.StateHash), blob(cs.Verifier), cs.ExpiresAt.UnixMicro(), created.UnixMicro(), text(mcp))
	return s.fail(ctx, "create connect session", err)
}

// BeginConnectSession records a new authorization request's state hash and
// sealed verifier on session id. Returns [store.ErrNotFound] if there is no
// such session.
func (s *Store) BeginConnectSession(ctx context.Context, id string, stateHash, verifier []byte) (store.ConnectSession, error) {
	if len(stateHash) == 0 || len(verifier) == 0 {
		return store.ConnectSession{}, errors.New("store/sqlite: begin connect session: state hash and verifier are required")
	}
	cs, err := scanConnectSession(s.w.QueryRowContext(ctx, `UPDATE connect_sessions
		SET state_hash = ?, verifier = ? WHERE id = ?
		RETURNING `+connectSessionColumns, stateHash, verifier, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.ConnectSession{}, sessionNotFound()
	}
	if err != nil {
		return store.ConnectSession{}, s.fail(ctx, "begin connect session", err)
	}
	return cs, nil
}

// ConsumeConnectSession deletes and returns the session with this state
// hash in one statement, so only one caller ever gets it. Returns
// [store.ErrNotFound] if there is none.
func (s *Store) ConsumeConnectSession(ctx context.Context, stateHash []byte) (store.ConnectSession, error) {
	if len(stateHash) == 0 {
		return store.ConnectSession{}, sessionNotFound()
	}
	cs, err := scanConnectSession(s.w.QueryRowContext(ctx,
		`DELETE FROM connect_sessions WHERE state_hash = ? RETURNING `+connectSessionColumns, stateHash))
	if errors.Is(err, sql.ErrNoRows) {
		return store.ConnectSession{}, sessionNotFound()
	}
	if err != nil {
		return store.ConnectSession{}, s.fail(ctx, "consume connect session", err)
	}
	return cs, nil
}

// DeleteExpiredConnectSessions deletes sessions that expired before now.
func (s *Store) DeleteExpiredConnectSessions(ctx context.Context, now time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM connect_sessions WHERE expires_at < ?`, now.UnixMicro())
	if err != nil {
		return 0, s.fail(ctx, "delete expired connect sessions", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, s.fail(ctx, "delete expired connect sessions", err)
	}
	return int(n), nil
}
