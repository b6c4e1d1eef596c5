package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

const apiKeyColumns = `id, name, scope, hash, created_at, revoked_at, connections, providers`

func scanAPIKey(row pgx.Row) (store.APIKey, error) {
	var (
		k       store.APIKey
		created time.Time
		revoked pgtype.Timestamptz
	)
	if err := row.Scan(&k.ID, &k.Name, &k.Scope, &k.Hash, &created, &revoked, &k.Connections, &k.Providers); err != nil {
		return store.APIKey{}, err
	}
	if len(k.Connections) == 0 {
		k.Connections = nil
	}
	if len(k.Providers) == 0 {
		k.Providers = nil
	}
	k.CreatedAt = created.UTC()
	k.RevokedAt = fromTstz(revoked)
	return k, nil
}

// CreateAPIKey stores k; a zero CreatedAt becomes the store's now. Returns
// [store.ErrAlreadyExists] if the id or the hash is taken.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	if k.ID == "" {
		return errors.New("store/postgres: api key id is empty")
	}
	if len(k.Hash) != sha256.Size {
		return fmt.Errorf("store/postgres: api key %q: hash is %d bytes, want a %d-byte SHA-256", k.ID, len(k.Hash), sha256.Size)
	}
	fields := []struct{ name, v string }{{"id", k.ID}, {"name", k.Name}, {"scope", k.Scope}}
	for _, c := range k.Connections {
		fields = append(fields, struct{ name, v string }{"connections", c})
	}
	for _, p := range k.Providers {
		fields = append(fields, struct{ name, v string }{"providers", p})
	}
	for _, f := range fields {
		if !storableID(f.v) {
			return fmt.Errorf("store/postgres: api key %q: %s is not valid UTF-8 text without NUL", k.ID, f.name)
		}
	}
	created := k.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	op := fmt.Sprintf("create api key %q", k.ID)
	return s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, `INSERT INTO api_keys (`+apiKeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			k.ID, k.Name, k.Scope, k.Hash, stored(created), tstz(k.RevokedAt), textArray(k.Connections), textArray(k.Providers))
		return s.fail(ctx, op, err)
	})
}

// GetAPIKeyByHash returns [store.ErrNotFound] for unknown or revoked keys.
func (s *Store) GetAPIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	notFound := fmt.Errorf("store/postgres: api key: %w", store.ErrNotFound)
	if len(hash) != sha256.Size {
		return store.APIKey{}, notFound
	}
	var k store.APIKey
	err := s.do(ctx, "get api key", true, func(conn *pgxpool.Conn) error {
		var err error
		k, err = scanAPIKey(conn.QueryRow(ctx,
			`SELECT `+apiKeyColumns+` FROM api_keys WHERE hash = $1 AND revoked_at IS NULL`, hash))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound
		}
		return s.fail(ctx, "get api key", err)
	})
	return k, err
}

// ListAPIKeys returns every key, revoked ones included, ordered by id.
func (s *Store) ListAPIKeys(ctx context.Context) ([]store.APIKey, error) {
	var keys []store.APIKey
	err := s.do(ctx, "list api keys", true, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY id`)
		if err != nil {
			return s.fail(ctx, "list api keys", err)
		}
		keys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.APIKey, error) { return scanAPIKey(r) })
		return s.fail(ctx, "list api keys", err)
	})
	return keys, err
}

// RevokeAPIKey returns [store.ErrNotFound] if there is no such id. Revoking
// twice keeps the first RevokedAt.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) error {
	notFound := fmt.Errorf("store/postgres: api key %q: %w", id, store.ErrNotFound)
	if !storableID(id) {
		return notFound
	}
	op := fmt.Sprintf("revoke api key %q", id)
	return s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		tag, err := conn.Exec(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1`,
			id, stored(s.now()))
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if tag.RowsAffected() == 0 {
			return notFound
		}
		return nil
	})
}

// CountAPIKeys counts keys that are not revoked.
func (s *Store) CountAPIKeys(ctx context.Context) (int, error) {
	var n int
	err := s.do(ctx, "count api keys", true, func(conn *pgxpool.Conn) error {
		return s.fail(ctx, "count api keys", conn.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE revoked_at IS NULL`).Scan(&n))
	})
	return n, err
}

// textArray stores a nil scope list as an empty array, not NULL.
func textArray(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}
