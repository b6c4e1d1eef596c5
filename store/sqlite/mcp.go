package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.MCPRegistrations = (*Store)(nil)

const mcpRegistrationColumns = `issuer, client_id, client_secret, token_endpoint_auth_method, method,
	redirect_uri, metadata, created_at, updated_at`

func scanMCPRegistration(row interface{ Scan(...any) error }) (store.MCPRegistration, error) {
	var (
		r                store.MCPRegistration
		metadata         string
		created, updated int64
	)
	if err := row.Scan(&r.Issuer, &r.ClientID, &r.ClientSecret, &r.TokenEndpointAuthMethod, &r.Method,
		&r.RedirectURI, &metadata, &created, &updated); err != nil {
		return store.MCPRegistration{}, err
	}
	r.Metadata = json.RawMessage(metadata)
	r.CreatedAt = fromMicros(sql.NullInt64{Int64: created, Valid: true})
	r.UpdatedAt = fromMicros(sql.NullInt64{Int64: updated, Valid: true})
	return r, nil
}

// PutMCPRegistration stores r as its issuer's registration, replacing an
// earlier one (whose CreatedAt is kept only if the client id is the same).
func (s *Store) PutMCPRegistration(ctx context.Context, r store.MCPRegistration) (store.MCPRegistration, error) {
	if err := r.Validate(); err != nil {
		return store.MCPRegistration{}, fmt.Errorf("store/sqlite: %w", err)
	}
	now := s.now().UnixMicro()
	out, err := scanMCPRegistration(s.w.QueryRowContext(ctx, `INSERT INTO mcp_registrations (`+mcpRegistrationColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (issuer) DO UPDATE SET client_id = excluded.client_id, client_secret = excluded.client_secret,
			token_endpoint_auth_method = excluded.token_endpoint_auth_method, method = excluded.method,
			redirect_uri = excluded.redirect_uri, metadata = excluded.metadata,
			created_at = CASE WHEN mcp_registrations.client_id = excluded.client_id
				THEN mcp_registrations.created_at ELSE excluded.created_at END,
			updated_at = excluded.updated_at
		RETURNING `+mcpRegistrationColumns,
		r.Issuer, r.ClientID, blob(r.ClientSecret), r.TokenEndpointAuthMethod, r.Method,
		r.RedirectURI, string(r.Metadata), now, now))
	if err != nil {
		return store.MCPRegistration{}, s.fail(ctx, fmt.Sprintf("put mcp registration of %q", r.Issuer), err)
	}
	return out, nil
}

// GetMCPRegistration returns [store.ErrNotFound] if the issuer has none.
func (s *Store) GetMCPRegistration(ctx context.Context, issuer string) (store.MCPRegistration, error) {
	r, err := scanMCPRegistration(s.r.QueryRowContext(ctx,
		`SELECT `+mcpRegistrationColumns+` FROM mcp_registrations WHERE issuer = ?`, issuer))
	if errors.Is(err, sql.ErrNoRows) {
		return store.MCPRegistration{}, fmt.Errorf("store/sqlite: mcp registration of %q: %w", issuer, store.ErrNotFound)
	}
	if err != nil {
		return store.MCPRegistration{}, s.fail(ctx, fmt.Sprintf("get mcp registration of %q", issuer), err)
	}
	return r, nil
}

// DeleteMCPRegistration deletes the issuer's registration if it is still
// clientID's. Returns [store.ErrNotFound] otherwise.
func (s *Store) DeleteMCPRegistration(ctx context.Context, issuer, clientID string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM mcp_registrations WHERE issuer = ? AND client_id = ?`, issuer, clientID)
	if err != nil {
		return s.fail(ctx, fmt.Sprintf("delete mcp registration of %q", issuer), err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store/sqlite: mcp registration of %q with that client id: %w", issuer, store.ErrNotFound)
	}
	return nil
}

// ListMCPRegistrations returns every registration, ordered by issuer.
func (s *Store) ListMCPRegistrations(ctx context.Context) ([]store.MCPRegistration, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+mcpRegistrationColumns+` FROM mcp_registrations ORDER BY issuer`)
	if err != nil {
		return nil, s.fail(ctx, "list mcp registrations", err)
	}
	defer rows.Close()
	var out []store.MCPRegistration
	for rows.Next() {
		r, err := scanMCPRegistration(rows)
		if err != nil {
			return nil, s.fail(ctx, "list mcp registrations", err)
		}
		out = append(out, r)
	}
	return out, s.fail(ctx, "list mcp registrations", rows.Err())
}

// ResealMCPRegistration replaces the sealed secret if the client is still
// clientID. Returns [store.ErrNotFound] otherwise.
func (s *Store) ResealMCPRegistration(ctx context.Context, issuer, clientID string, secret []byte) error {
	res, err := s.w.ExecContext(ctx, `UPDATE mcp_registrations SET client_secret = ?, updated_at = ?
		WHERE issuer = ? AND client_id = ?`, blob(secret), s.now().UnixMicro(), issuer, clientID)
	if err != nil {
		return s.fail(ctx, fmt.Sprintf("reseal mcp registration of %q", issuer), err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store/sqlite: mcp registration of %q with that client id: %w", issuer, store.ErrNotFound)
	}
	return nil
}
