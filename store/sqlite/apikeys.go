package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/store"
)

const apiKeyColumns = `id, name, scope, hash, created_at, revoked_at, connections, providers`

func scanAPIKey(row interface{ Scan(...any) error }) (store.APIKey, error) {
	var (
		k       store.APIKey
		created int64
		revoked sql.NullInt64
		conns   string
		provs   string
	)
	if err := row.Scan(&k.ID, &k.Name, &k.Scope, &k.Hash, &created, &revoked, &conns, &provs); err != nil {
		return store.APIKey{}, err
	}
	if err := json.Unmarshal([]byte(conns), &k.Connections); err != nil {
		return store.APIKey{}, fmt.Errorf("api key %q: connections: %w", k.ID, err)
	}
	if err := json.Unmarshal([]byte(provs), &k.Providers); err != nil {
		return store.APIKey{}, fmt.Errorf("api key %q: providers: %w", k.ID, err)
	}
	if len(k.Connections) == 0 {
		k.Connections = nil
	}
	if len(k.Providers) == 0 {
		k.Providers = nil
	}
	k.CreatedAt = fromMicros(sql.NullInt64{Int64: created, Valid: true})
	k.RevokedAt = fromMicros(revoked)
	return k, nil
}

// CreateAPIKey stores k; a zero CreatedAt becomes the store's now. Returns
// [store.ErrAlreadyExists] if the id or the hash is taken.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	if k.ID == "" {
		return errors.New("store/sqlite: api key id is empty")
	}
	if len(k.Hash) != sha256.Size {
		return fmt.Errorf("store/sqlite: api key %q: hash is %d bytes, want a %d-byte SHA-256", k.ID, len(k.Hash), sha256.Size)
	}
	created := k.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO api_keys (`+apiKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.Name, k.Scope, k.Hash, created.UnixMicro(), micros(k.RevokedAt), jsonList(k.Connections), jsonList(k.Providers))
	return s.fail(ctx, fmt.Sprintf("create api key %q", k.ID), err)
}

// GetAPIKeyByHash returns [store.ErrNotFound] for unknown or revoked keys.
func (s *Store) GetAPIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	if len(hash) != sha256.Size {
		return store.APIKey{}, fmt.Errorf("store/sqlite: api key: %w", store.ErrNotFound)
	}
	k, err := scanAPIKey(s.r.QueryRowContext(ctx,
		`SELECT `+apiKeyColumns+` FROM api_keys WHERE hash = ? AND revoked_at IS NULL`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return store.APIKey{}, fmt.Errorf("store/sqlite: api key: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.APIKey{}, s.fail(ctx, "get api key", err)
	}
	return k, nil
}

// ListAPIKeys returns every key, revoked ones included, ordered by id.
func (s *Store) ListAPIKeys(ctx context.Context) ([]store.APIKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY id`)
	if err != nil {
		return nil, s.fail(ctx, "list api keys", err)
	}
	defer rows.Close()
	var keys []store.APIKey
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, s.fail(ctx, "list api keys", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, "list api keys", err)
	}
	return keys, nil
}

// RevokeAPIKey returns [store.ErrNotFound] if there is no such id. Revoking
// twice keeps the first RevokedAt.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) error {
	op := fmt.Sprintf("revoke api key %q", id)
	res, err := s.w.ExecContext(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`,
		s.now().UnixMicro(), id)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if n == 0 {
		return fmt.Errorf("store/sqlite: api key %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// CountAPIKeys counts keys that are not revoked.
func (s *Store) CountAPIKeys(ctx context.Context) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM api_keys WHERE revoked_at IS NULL`).Scan(&n)
	return n, s.fail(ctx, "count api keys", err)
}

// jsonList encodes a key's scope list; nil is stored as [].
func jsonList(v []string) string {
	if len(v) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(v) // []string always marshals
	return string(b)
}
