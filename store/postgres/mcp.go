package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.MCPRegistrations = (*Store)(nil)

const mcpRegistrationColumns = `issuer, client_id, client_secret, token_endpoint_auth_method, method,
	redirect_uri, metadata, created_at, updated_at`

func scanMCPRegistration(row pgx.Row) (store.MCPRegistration, error) {
	var (
		r                store.MCPRegistration
		metadata         []byte
		created, updated time.Time
	)
	if err := row.Scan(&r.Issuer, &r.ClientID, &r.ClientSecret, &r.TokenEndpointAuthMethod, &r.Method,
		&r.RedirectURI, &metadata, &created, &updated); err != nil {
		return store.MCPRegistration{}, err
	}
	r.Metadata = json.RawMessage(metadata)
	r.CreatedAt, r.UpdatedAt = created.UTC(), updated.UTC()
	return r, nil
}

// PutMCPRegistration stores r as its issuer's registration, replacing an
// earlier one (whose CreatedAt is kept only if the client id is the same).
func (s *Store) PutMCPRegistration(ctx context.Context, r store.MCPRegistration) (store.MCPRegistration, error) {
	if err := r.Validate(); err != nil {
		return store.MCPRegistration{}, fmt.Errorf("store/postgres: %w", err)
	}
	for _, f := range []struct{ name, v string }{
		{"issuer", r.Issuer}, {"client id", r.ClientID}, {"auth method", r.TokenEndpointAuthMethod},
		{"method", r.Method}, {"redirect uri", r.RedirectURI},
	} {
		if !storableID(f.v) {
			return store.MCPRegistration{}, fmt.Errorf("store/postgres: mcp registration: %s is not valid UTF-8 text without NUL", f.name)
		}
	}
	op := fmt.Sprintf("put mcp registration of %q", r.Issuer)
	now := stored(s.now())
	var out store.MCPRegistration
	err := s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		var err error
		out, err = scanMCPRegistration(conn.QueryRow(ctx, `INSERT INTO mcp_registrations (`+mcpRegistrationColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
			ON CONFLICT (issuer) DO UPDATE SET client_id = excluded.client_id, client_secret = excluded.client_secret,
				token_endpoint_auth_method = excluded.token_endpoint_auth_method, method = excluded.method,
				redirect_uri = excluded.redirect_uri, metadata = excluded.metadata,
				created_at = CASE WHEN mcp_registrations.client_id = excluded.client_id
					THEN mcp_registrations.created_at ELSE excluded.created_at END,
				updated_at = excluded.updated_at
			RETURNING `+mcpRegistrationColumns,
			r.Issuer, r.ClientID, blob(r.ClientSecret), r.TokenEndpointAuthMethod, r.Method,
			r.RedirectURI, []byte(r.Metadata), now))
		return s.fail(ctx, op, err)
	})
	return out, err
}

// GetMCPRegistration returns [store.ErrNotFound] if the issuer has none.
func (s *Store) GetMCPRegistration(ctx context.Context, issuer string) (store.MCPRegistration, error) {
	if !storableID(issuer) {
		return store.MCPRegistration{}, fmt.Errorf("store/postgres: mcp registration: %w", store.ErrNotFound)
	}
	op := fmt.Sprintf("get mcp registration of %q", issuer)
	var out store.MCPRegistration
	err := s.do(ctx, op, true, func(conn *pgxpool.Conn) error {
		var err error
		out, err = scanMCPRegistration(conn.QueryRow(ctx,
			`SELECT `+mcpRegistrationColumns+` FROM mcp_registrations WHERE issuer = $1`, issuer))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("store/postgres: mcp registration of %q: %w", issuer, store.ErrNotFound)
		}
		return s.fail(ctx, op, err)
	})
	return out, err
}

// DeleteMCPRegistration deletes the issuer's registration if it is still
// clientID's. Returns [store.ErrNotFound] otherwise.
func (s *Store) DeleteMCPRegistration(ctx context.Context, issuer, clientID string) error {
	if !storableID(issuer) || !storableID(clientID) {
		return fmt.Errorf("store/postgres: mcp registration: %w", store.ErrNotFound)
	}
	op := fmt.Sprintf("delete mcp registration of %q", issuer)
	return s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		tag, err := conn.Exec(ctx, `DELETE FROM mcp_registrations WHERE issuer = $1 AND client_id = $2`, issuer, clientID)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("store/postgres: mcp registration of %q with that client id: %w", issuer, store.ErrNotFound)
		}
		return nil
	})
}

// ListMCPRegistrations returns every registration, ordered by issuer.
func (s *Store) ListMCPRegistrations(ctx context.Context) ([]store.MCPRegistration, error) {
	const op = "list mcp registrations"
	var out []store.MCPRegistration
	err := s.do(ctx, op, true, func(conn *pgxpool.Conn) error {
		out = nil
		rows, err := conn.Query(ctx, `SELECT `+mcpRegistrationColumns+` FROM mcp_registrations ORDER BY issuer`)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanMCPRegistration(rows)
			if err != nil {
				return s.fail(ctx, op, err)
			}
			out = append(out, r)
		}
		return s.fail(ctx, op, rows.Err())
	})
	return out, err
}

// ResealMCPRegistration replaces the sealed secret if the client is still
// clientID. Returns [store.ErrNotFound] otherwise.
func (s *Store) ResealMCPRegistration(ctx context.Context, issuer, clientID string, secret []byte) error {
	if !storableID(issuer) || !storableID(clientID) {
		return fmt.Errorf("store/postgres: mcp registration: %w", store.ErrNotFound)
	}
	op := fmt.Sprintf("reseal mcp registration of %q", issuer)
	return s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		tag, err := conn.Exec(ctx, `UPDATE mcp_registrations SET client_secret = $3, updated_at = $4
			WHERE issuer = $1 AND client_id = $2`, issuer, clientID, blob(secret), stored(s.now()))
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("store/postgres: mcp registration of %q with that client id: %w", issuer, store.ErrNotFound)
		}
		return nil
	})
}
