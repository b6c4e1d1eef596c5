package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

const connectionColumns = `id, provider, status, access_token, refresh_token, token_type, scope,
	expires_at, expiry_defaulted, refresh_expires_at, refresh_hard_expires_at,
	last_refresh_at, last_used_at, failure, metadata, version,
	lease_owner, lease_until, created_at, updated_at, grant_type, next_refresh_at,
	issued_at, incarnation, on_error_refresh_at, refresh_started_at, mcp`

// micros encodes a time as unix microseconds in UTC; the zero time is NULL.
func micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMicro(n.Int64).UTC()
}

// stored is t as the store keeps it: UTC, whole microseconds.
func stored(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

// text stores empty JSON as NULL.
func text(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

// blob stores an empty token as NULL so that nil comes back as nil.
func blob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// dataArgs are the caller-owned columns, validated and encoded, in the order
// of dataColumns.
const dataColumns = `provider, status, access_token, refresh_token, token_type, scope,
	expires_at, expiry_defaulted, refresh_expires_at, refresh_hard_expires_at,
	last_refresh_at, last_used_at, failure, metadata`

func dataArgs(c store.Connection) ([]any, error) {
	if c.ID == "" {
		return nil, errors.New("store/sqlite: connection id is empty")
	}
	if c.Provider == "" {
		return nil, fmt.Errorf("store/sqlite: connection %q: provider is empty", c.ID)
	}
	if !c.Status.Valid() {
		return nil, fmt.Errorf("store/sqlite: connection %q: status %q is not active, needs_reauth or revoked", c.ID, c.Status)
	}
	var metadata any
	if len(c.Metadata) > 0 {
		if !json.Valid(c.Metadata) {
			return nil, fmt.Errorf("store/sqlite: connection %q: metadata is not valid JSON", c.ID)
		}
		metadata = string(c.Metadata)
	}
	var failure any
	if c.Failure != nil {
		f := *c.Failure
		f.FirstAt, f.NextAttemptAt = stored(f.FirstAt), stored(f.NextAttemptAt)
		b, err := json.Marshal(f)
		if err != nil {
			return nil, fmt.Errorf("store/sqlite: connection %q: failure: %w", c.ID, err)
		}
		failure = string(b)
	}
	defaulted := 0
	if c.ExpiryDefaulted {
		defaulted = 1
	}
	return []any{
		c.Provider, string(c.Status), blob(c.AccessToken), blob(c.RefreshToken), c.TokenType, c.Scope,
		micros(c.ExpiresAt), defaulted, micros(c.RefreshExpiresAt), micros(c.RefreshHardExpiresAt),
		micros(c.LastRefreshAt), micros(c.LastUsedAt), failure, metadata,
	}, nil
}

func scanConnection(row interface{ Scan(...any) error }) (store.Connection, error) {
	var (
		c                                                                       store.Connection
		status                                                                  string
		expires, refreshExpires, refreshHard, lastRefresh, lastUsed, leaseUntil sql.NullInt64
		nextRefresh, issued, onError, started                                   sql.NullInt64
		defaulted                                                               int64
		failure, metadata                                                       sql.NullString
		mcpJSON                                                                 sql.NullString
		created, updated                                                        int64
	)
	err := row.Scan(&c.ID, &c.Provider, &status, &c.AccessToken, &c.RefreshToken, &c.TokenType, &c.Scope,
		&expires, &defaulted, &refreshExpires, &refreshHard,
		&lastRefresh, &lastUsed, &failure, &metadata, &c.Version,
		&c.LeaseOwner, &leaseUntil, &created, &updated, &c.Grant, &nextRefresh,
		&issued, &c.Incarnation, &onError, &started, &mcpJSON)
	if err != nil {
		return store.Connection{}, err
	}
	if c.MCP, err = store.DecodeMCP(c.ID, []byte(mcpJSON.String)); err != nil {
		return store.Connection{}, err
	}
	c.Status = store.Status(status)
	c.ExpiresAt = fromMicros(expires)
	c.ExpiryDefaulted = defaulted != 0
	c.RefreshExpiresAt = fromMicros(refreshExpires)
	c.RefreshHardExpiresAt = fromMicros(refreshHard)
	c.LastRefreshAt = fromMicros(lastRefresh)
	c.LastUsedAt = fromMicros(lastUsed)
	c.LeaseUntil = fromMicros(leaseUntil)
	c.NextRefreshAt = fromMicros(nextRefresh)
	c.IssuedAt = fromMicros(issued)
	c.OnErrorRefreshAt = fromMicros(onError)
	c.RefreshStartedAt = fromMicros(started)
	c.CreatedAt = time.UnixMicro(created).UTC()
	c.UpdatedAt = time.UnixMicro(updated).UTC()
	if failure.Valid {
		var f store.Failure
		if err := json.Unmarshal([]byte(failure.String), &f); err != nil {
			return store.Connection{}, fmt.Errorf("stored failure of %q is not valid JSON: %w", c.ID, err)
		}
		f.FirstAt, f.NextAttemptAt = stored(f.FirstAt), stored(f.NextAttemptAt)
		c.Failure = &f
	}
	if metadata.Valid {
		c.Metadata = json.RawMessage(metadata.String)
	}
	return c, nil
}

const getQuery = `SELECT ` + connectionColumns + ` FROM connections WHERE id = ?`

// casQuery writes the data columns (in dataArgs order), then updated_at, if
// id and version still match.
const casQuery = `UPDATE connections SET
	provider = ?, status = ?, access_token = ?, refresh_token = ?, token_type = ?, scope = ?,
	expires_at = ?, expiry_defaulted = ?, refresh_expires_at = ?, refresh_hard_expires_at = ?,
	last_refresh_at = ?, last_used_at = ?, failure = ?, metadata = ?,
	version = version + 1, updated_at = ?, grant_type = ?, next_refresh_at = ?, issued_at = ?, on_error_refresh_at = ?,
	refresh_started_at = ?, mcp = ?
	WHERE id = ? AND incarnation = ? AND version = ?
	RETURNING ` + connectionColumns

func notFound(id string) error {
	return fmt.Errorf("store/sqlite: connection %q: %w", id, store.ErrNotFound)
}

// CreateConnection stores c with Version 1, a new incarnation, a free lease
// and CreatedAt and UpdatedAt from the store's clock, and queues events.
// Returns [store.ErrAlreadyExists] if the id is taken.
func (s *Store) CreateConnection(ctx context.Context, c store.Connection, events ...store.Event) (store.Connection, error) {
	args, err := insertArgs(c, s.now().UnixMicro())
	if err != nil {
		return store.Connection{}, err
	}
	w, err := s.beginEvents(ctx, fmt.Sprintf("create connection %q", c.ID), events)
	if err != nil {
		return store.Connection{}, err
	}
	defer w.rollback()
	row := w.QueryRowContext(ctx, insertConnection+` RETURNING `+connectionColumns, args...)
	out, err := scanConnection(row)
	if err == nil {
		err = w.commit(ctx)
	}
	if err != nil {
		return store.Connection{}, s.fail(ctx, fmt.Sprintf("create connection %q", c.ID), err)
	}
	return out, nil
}

// insertConnection stores a new connection, free of any lease, at version
// 1, from the arguments of [insertArgs]. CreateConnection and
// CreateConnections both write a new row through it.
const insertConnection = `INSERT INTO connections (id, ` + dataColumns + `,
	version, lease_owner, lease_until, created_at, updated_at, grant_type, next_refresh_at,
	issued_at, incarnation, on_error_refresh_at, refresh_started_at, mcp)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, '', NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// insertArgs are insertConnection's arguments for c, created at now (Unix
// microseconds), with a new incarnation.
func insertArgs(c store.Connection, now int64) ([]any, error) {
	args, err := dataArgs(c)
	if err != nil {
		return nil, err
	}
	mcp, err := store.EncodeMCP(c.ID, c.MCP)
	if err != nil {
		return nil, fmt.Errorf("store/sqlite: %w", err)
	}
	args = append([]any{c.ID}, args...)
	return append(args, now, now, c.Grant, micros(c.NextRefreshAt), micros(c.IssuedAt), store.NewIncarnation(),
		micros(c.OnErrorRefreshAt), micros(c.RefreshStartedAt), text(mcp)), nil
}

// GetConnection returns [store.ErrNotFound] if there is no such id.
func (s *Store) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	c, err := scanConnection(s.getStmt.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Connection{}, notFound(id)
	}
	if err != nil {
		return store.Connection{}, s.fail(ctx, fmt.Sprintf("get connection %q", id), err)
	}
	return c, nil
}

// UpdateConnection reads the row, calls update with no lock held, and
// compare-and-swaps the result on the version it read; see
// [store.UpdateWithCAS].
func (s *Store) UpdateConnection(ctx context.Context, id string, update store.Updater) (store.Connection, error) {
	return store.UpdateWithCAS(ctx, s, id, update)
}

// CompareAndSwap writes c's data, and queues events, if the stored row is
// c.Incarnation at c.Version, and returns the stored row. Lease fields and
// CreatedAt are never written here.
func (s *Store) CompareAndSwap(ctx context.Context, c store.Connection, events ...store.Event) (store.Connection, error) {
	args, err := dataArgs(c)
	if err != nil {
		return store.Connection{}, err
	}
	mcp, err := store.EncodeMCP(c.ID, c.MCP)
	if err != nil {
		return store.Connection{}, fmt.Errorf("store/sqlite: %w", err)
	}
	args = append(args, s.now().UnixMicro(), c.Grant, micros(c.NextRefreshAt), micros(c.IssuedAt), micros(c.OnErrorRefreshAt), micros(c.RefreshStartedAt), text(mcp), c.ID, c.Incarnation, c.Version)
	w, err := s.beginEvents(ctx, fmt.Sprintf("compare-and-swap connection %q", c.ID), events)
	if err != nil {
		return store.Connection{}, err
	}
	defer w.rollback()
	out, err := scanConnection(w.stmt(ctx, s.casStmt).QueryRowContext(ctx, args...))
	if err == nil {
		err = w.commit(ctx)
	}
	if err == nil {
		return out, nil
	}
	op := fmt.Sprintf("compare-and-swap connection %q", c.ID)
	if !errors.Is(err, sql.ErrNoRows) {
		return store.Connection{}, s.fail(ctx, op, err)
	}
	// Nothing matched: the row is gone, is another incarnation, or its
	// version moved on.
	var one int
	err = s.r.QueryRowContext(ctx, `SELECT 1 FROM connections WHERE id = ? AND incarnation = ?`, c.ID, c.Incarnation).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Connection{}, notFound(c.ID)
	case err != nil:
		return store.Connection{}, s.fail(ctx, op, err)
	}
	return store.Connection{}, fmt.Errorf("store/sqlite: %s at version %d: %w", op, c.Version, store.ErrConflict)
}

// DeleteConnection returns [store.ErrNotFound] if there is no such id.
func (s *Store) DeleteConnection(ctx context.Context, id string, events ...store.Event) error {
	w, err := s.beginEvents(ctx, fmt.Sprintf("delete connection %q", id), events)
	if err != nil {
		return err
	}
	defer w.rollback()
	res, err := w.ExecContext(ctx, `DELETE FROM connections WHERE id = ?`, id)
	if err != nil {
		return s.fail(ctx, fmt.Sprintf("delete connection %q", id), err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.fail(ctx, fmt.Sprintf("delete connection %q", id), err)
	} else if n == 0 {
		return notFound(id)
	}
	return s.fail(ctx, fmt.Sprintf("delete connection %q", id), w.commit(ctx))
}

// listQuery is ListConnections' statement for opts and the page size:
// only the filters in use, so that SQLite picks the index that serves
// them in id order ((provider, id), (status, id) or (provider, status, id)).
func listQuery(opts store.ListOptions, limit int) (string, []any) {
	q := `SELECT ` + connectionColumns + ` FROM connections WHERE id > ?`
	args := []any{opts.After}
	if opts.Provider != "" {
		q += ` AND provider = ?`
		args = append(args, opts.Provider)
	}
	if opts.Status != "" {
		q += ` AND status = ?`
		args = append(args, string(opts.Status))
	}
	// One row more than the page tells whether another page follows.
	q += ` ORDER BY id LIMIT ?`
	args = append(args, limit+1)
	return q, args
}

// ListConnections returns a page of connections in byte order of id.
func (s *Store) ListConnections(ctx context.Context, opts store.ListOptions) (store.Page, error) {
	limit := opts.Limit
	switch {
	case limit < 0:
		return store.Page{}, fmt.Errorf("store/sqlite: list limit %d is negative", limit)
	case limit == 0:
		limit = store.DefaultListLimit
	case limit > store.MaxListLimit:
		limit = store.MaxListLimit
	}
	if opts.Status != "" && !opts.Status.Valid() {
		return store.Page{}, fmt.Errorf("store/sqlite: list status %q is not active, needs_reauth or revoked", opts.Status)
	}
	q, args := listQuery(opts, limit)

	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return store.Page{}, s.fail(ctx, "list connections", err)
	}
	defer rows.Close()
	var page store.Page
	for rows.Next() {
		c, err := scanConnection(rows)
		if err != nil {
			return store.Page{}, s.fail(ctx, "list connections", err)
		}
		page.Connections = append(page.Connections, c)
	}
	if err := rows.Err(); err != nil {
		return store.Page{}, s.fail(ctx, "list connections", err)
	}
	if len(page.Connections) > limit {
		page.Connections = page.Connections[:limit]
		page.NextAfter = page.Connections[limit-1].ID
	}
	return page, nil
}

// AcquireLease takes the lease in one UPDATE that matches only a free,
// expired or own lease; "expired" is judged by the store's clock, not
// SQLite's. When it matches nothing, the row is read in the same IMMEDIATE
// transaction, so the holder returned with [store.ErrLeaseHeld] is the one
// that blocked the UPDATE.
func (s *Store) AcquireLease(ctx context.Context, id, owner string, ttl time.Duration) (store.Connection, error) {
	if owner == "" {
		return store.Connection{}, fmt.Errorf("store/sqlite: lease on %q: owner is empty", id)
	}
	if ttl <= 0 {
		return store.Connection{}, fmt.Errorf("store/sqlite: lease on %q: ttl %v is not positive", id, ttl)
	}
	now := s.now()
	op := fmt.Sprintf("lease on %q", id)
	var (
		out  store.Connection
		held bool
	)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return store.Connection{}, s.fail(ctx, op, err)
	}
	defer tx.Rollback()
	out, err = scanConnection(tx.StmtContext(ctx, s.leaseStmt).QueryRowContext(ctx,
		owner, now.Add(ttl).UnixMicro(), id, now.UnixMicro(), owner))
	if errors.Is(err, sql.ErrNoRows) {
		held = true
		out, err = scanConnection(tx.StmtContext(ctx, s.leaseGetStmt).QueryRowContext(ctx, id))
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.Connection{}, notFound(id)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return store.Connection{}, s.fail(ctx, op, err)
	}
	if held {
		return out, fmt.Errorf("store/sqlite: %s: %w", op, store.ErrLeaseHeld)
	}
	return out, nil
}

// leaseQuery takes a free, expired or own lease (AcquireLease).
const leaseQuery = `UPDATE connections
		SET lease_owner = ?, lease_until = ?
		WHERE id = ? AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)
		RETURNING ` + connectionColumns

const releaseLeaseQuery = `UPDATE connections SET lease_owner = '', lease_until = NULL
		WHERE id = ? AND lease_owner = ? AND lease_owner != ''`

// ReleaseLease frees the lease if owner holds it; otherwise, or if there is
// no such id, it does nothing.
func (s *Store) ReleaseLease(ctx context.Context, id, owner string) error {
	_, err := s.releaseLeaseStmt.ExecContext(ctx, id, owner)
	return s.fail(ctx, fmt.Sprintf("release lease on %q", id), err)
}
