package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

const connectionColumns = `id, provider, status, access_token, refresh_token, token_type, scope,
	expires_at, expiry_defaulted, refresh_expires_at, refresh_hard_expires_at,
	last_refresh_at, last_used_at, failure, metadata, version,
	lease_owner, lease_until, created_at, updated_at, grant_type, next_refresh_at,
	issued_at, incarnation, on_error_refresh_at, refresh_started_at, mcp`

// stored is t as the store keeps it: UTC, whole microseconds (timestamptz
// precision).
func stored(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

// tstz encodes a time; the zero time is NULL.
func tstz(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return stored(t)
}

func fromTstz(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// blob stores an empty token as NULL so that nil comes back as nil.
func blob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// checkText rejects what a PostgreSQL text column cannot hold, so that the
// caller gets an error naming the field rather than an encoding error.
func checkText(id, field, v string) error {
	if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
		if field == "id" {
			return fmt.Errorf("store/postgres: connection id %q is not valid UTF-8 text without NUL", v)
		}
		return fmt.Errorf("store/postgres: connection %q: %s is not valid UTF-8 text without NUL", id, field)
	}
	return nil
}

// storableID reports whether id could be stored at all; lookups of other
// ids are answered "not found" without asking the database.
func storableID(id string) bool {
	return utf8.ValidString(id) && !strings.ContainsRune(id, 0)
}

func dataArgs(c store.Connection) ([]any, error) {
	if c.ID == "" {
		return nil, errors.New("store/postgres: connection id is empty")
	}
	if c.Provider == "" {
		return nil, fmt.Errorf("store/postgres: connection %q: provider is empty", c.ID)
	}
	if !c.Status.Valid() {
		return nil, fmt.Errorf("store/postgres: connection %q: status %q is not active, needs_reauth or revoked", c.ID, c.Status)
	}
	for _, f := range []struct{ name, v string }{
		{"id", c.ID}, {"provider", c.Provider}, {"token type", c.TokenType}, {"scope", c.Scope},
	} {
		if err := checkText(c.ID, f.name, f.v); err != nil {
			return nil, err
		}
	}
	var metadata any
	if len(c.Metadata) > 0 {
		if !json.Valid(c.Metadata) {
			return nil, fmt.Errorf("store/postgres: connection %q: metadata is not valid JSON", c.ID)
		}
		metadata = []byte(c.Metadata)
	}
	var failure any
	if c.Failure != nil {
		f := *c.Failure
		f.FirstAt, f.NextAttemptAt = stored(f.FirstAt), stored(f.NextAttemptAt)
		b, err := json.Marshal(f)
		if err != nil {
			return nil, fmt.Errorf("store/postgres: connection %q: failure: %w", c.ID, err)
		}
		failure = b
	}
	return []any{
		c.Provider, string(c.Status), blob(c.AccessToken), blob(c.RefreshToken), c.TokenType, c.Scope,
		tstz(c.ExpiresAt), c.ExpiryDefaulted, tstz(c.RefreshExpiresAt), tstz(c.RefreshHardExpiresAt),
		tstz(c.LastRefreshAt), tstz(c.LastUsedAt), failure, metadata,
	}, nil
}

func scanConnection(row pgx.Row) (store.Connection, error) {
	var (
		c                                                                       store.Connection
		status                                                                  string
		expires, refreshExpires, refreshHard, lastRefresh, lastUsed, leaseUntil pgtype.Timestamptz
		nextRefresh, issued, onError, started                                   pgtype.Timestamptz
		created, updated                                                        time.Time
		failure, metadata                                                       []byte
		mcpJSON                                                                 []byte
		leaseOwner                                                              pgtype.Text
	)
	err := row.Scan(&c.ID, &c.Provider, &status, &c.AccessToken, &c.RefreshToken, &c.TokenType, &c.Scope,
		&expires, &c.ExpiryDefaulted, &refreshExpires, &refreshHard,
		&lastRefresh, &lastUsed, &failure, &metadata, &c.Version,
		&leaseOwner, &leaseUntil, &created, &updated, &c.Grant, &nextRefresh,
		&issued, &c.Incarnation, &onError, &started, &mcpJSON)
	if err != nil {
		return store.Connection{}, err
	}
	if c.MCP, err = store.DecodeMCP(c.ID, mcpJSON); err != nil {
		return store.Connection{}, err
	}
	c.Status = store.Status(status)
	c.ExpiresAt = fromTstz(expires)
	c.RefreshExpiresAt = fromTstz(refreshExpires)
	c.RefreshHardExpiresAt = fromTstz(refreshHard)
	c.LastRefreshAt = fromTstz(lastRefresh)
	c.LastUsedAt = fromTstz(lastUsed)
	c.LeaseOwner = leaseOwner.String
	c.LeaseUntil = fromTstz(leaseUntil)
	c.NextRefreshAt = fromTstz(nextRefresh)
	c.IssuedAt = fromTstz(issued)
	c.OnErrorRefreshAt = fromTstz(onError)
	c.RefreshStartedAt = fromTstz(started)
	c.CreatedAt = created.UTC()
	c.UpdatedAt = updated.UTC()
	if failure != nil {
		var f store.Failure
		if err := json.Unmarshal(failure, &f); err != nil {
			return store.Connection{}, fmt.Errorf("stored failure of %q does not decode: %w", c.ID, err)
		}
		f.FirstAt, f.NextAttemptAt = stored(f.FirstAt), stored(f.NextAttemptAt)
		c.Failure = &f
	}
	if metadata != nil {
		c.Metadata = json.RawMessage(metadata)
	}
	return c, nil
}

func notFound(id string) error {
	return fmt.Errorf("store/postgres: connection %q: %w", id, store.ErrNotFound)
}

// newRowColumns are the columns of a new connection row, in the order of
// newRow's values: the id, the caller-owned columns in the order of
// dataArgs, then the store's own. The lease columns are left NULL (free).
var newRowColumns = []string{"id", "provider", "status", "access_token", "refresh_token", "token_type", "scope",
	"expires_at", "expiry_defaulted", "refresh_expires_at", "refresh_hard_expires_at",
	"last_refresh_at", "last_used_at", "failure", "metadata",
	"version", "created_at", "updated_at", "grant_type", "next_refresh_at",
	"issued_at", "incarnation", "on_error_refresh_at", "refresh_started_at", "mcp"}

// insertConnection stores one newRow; CreateConnections copies many.
var insertConnection = func() string {
	marks := make([]string, len(newRowColumns))
	for i := range marks {
		marks[i] = "$" + strconv.Itoa(i+1)
	}
	return "INSERT INTO connections (" + strings.Join(newRowColumns, ", ") + ") VALUES (" + strings.Join(marks, ", ") + ")"
}()

// newRow is a new connection row for c in newRowColumns' order: version 1,
// created and updated at now, a new incarnation.
func newRow(c store.Connection, now time.Time) ([]any, error) {
	args, err := dataArgs(c)
	if err != nil {
		return nil, err
	}
	mcp, err := store.EncodeMCP(c.ID, c.MCP)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: %w", err)
	}
	args = append([]any{c.ID}, args...)
	return append(args, int64(1), stored(now), stored(now), c.Grant, tstz(c.NextRefreshAt), tstz(c.IssuedAt), store.NewIncarnation(),
		tstz(c.OnErrorRefreshAt), tstz(c.RefreshStartedAt), blob(mcp)), nil
}

// CreateConnection stores c with Version 1, a new incarnation, a free lease
// and CreatedAt and UpdatedAt from the store's clock, and queues events.
// Returns [store.ErrAlreadyExists] if the id is taken.
func (s *Store) CreateConnection(ctx context.Context, c store.Connection, events ...store.Event) (store.Connection, error) {
	args, err := newRow(c, s.now())
	if err != nil {
		return store.Connection{}, err
	}
	op := fmt.Sprintf("create connection %q", c.ID)
	var out store.Connection
	err = s.do(ctx, op, false, func(pc *pgxpool.Conn) error {
		conn, err := s.beginEvents(ctx, pc, op, events)
		if err != nil {
			return err
		}
		defer conn.rollback(ctx)
		out, err = scanConnection(conn.QueryRow(ctx, insertConnection+` RETURNING `+connectionColumns, args...))
		return conn.commit(ctx, s.fail(ctx, op, err))
	})
	return out, err
}

// GetConnection returns [store.ErrNotFound] if there is no such id.
func (s *Store) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	if !storableID(id) {
		return store.Connection{}, notFound(id)
	}
	op := fmt.Sprintf("get connection %q", id)
	var out store.Connection
	err := s.do(ctx, op, true, func(conn *pgxpool.Conn) error {
		var err error
		out, err = scanConnection(conn.QueryRow(ctx, `SELECT `+connectionColumns+` FROM connections WHERE id = $1`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(id)
		}
		return s.fail(ctx, op, err)
	})
	return out, err
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
	args = append([]any{c.ID}, args...)
	mcp, err := store.EncodeMCP(c.ID, c.MCP)
	if err != nil {
		return store.Connection{}, fmt.Errorf("store/postgres: %w", err)
	}
	args = append(args, stored(s.now()), c.Version, c.Grant, tstz(c.NextRefreshAt), tstz(c.IssuedAt), c.Incarnation, tstz(c.OnErrorRefreshAt), tstz(c.RefreshStartedAt), blob(mcp))
	op := fmt.Sprintf("compare-and-swap connection %q", c.ID)
	var out store.Connection
	err = s.do(ctx, op, false, func(pc *pgxpool.Conn) error {
		conn, err := s.beginEvents(ctx, pc, op, events)
		if err != nil {
			return err
		}
		defer conn.rollback(ctx)
		out, err = scanConnection(conn.QueryRow(ctx, `UPDATE connections SET
			provider = $2, status = $3, access_token = $4, refresh_token = $5, token_type = $6, scope = $7,
			expires_at = $8, expiry_defaulted = $9, refresh_expires_at = $10, refresh_hard_expires_at = $11,
			last_refresh_at = $12, last_used_at = $13, failure = $14, metadata = $15,
			version = version + 1, updated_at = $16, grant_type = $18, next_refresh_at = $19, issued_at = $20, on_error_refresh_at = $22,
			refresh_started_at = $23, mcp = $24
			WHERE id = $1 AND incarnation = $21 AND version = $17
			RETURNING `+connectionColumns, args...))
		if !errors.Is(err, pgx.ErrNoRows) {
			return conn.commit(ctx, s.fail(ctx, op, err))
		}
		// Nothing matched: the row is gone, is another incarnation, or its
		// version moved on.
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM connections WHERE id = $1 AND incarnation = $2)`,
			c.ID, c.Incarnation).Scan(&exists); err != nil {
			return s.fail(ctx, op, err)
		}
		if !exists {
			return notFound(c.ID)
		}
		return fmt.Errorf("store/postgres: %s at version %d: %w", op, c.Version, store.ErrConflict)
	})
	return out, err
}

// DeleteConnection returns [store.ErrNotFound] if there is no such id.
func (s *Store) DeleteConnection(ctx context.Context, id string, events ...store.Event) error {
	if !storableID(id) {
		return notFound(id)
	}
	op := fmt.Sprintf("delete connection %q", id)
	return s.do(ctx, op, false, func(pc *pgxpool.Conn) error {
		conn, err := s.beginEvents(ctx, pc, op, events)
		if err != nil {
			return err
		}
		defer conn.rollback(ctx)
		tag, err := conn.Exec(ctx, `DELETE FROM connections WHERE id = $1`, id)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if tag.RowsAffected() == 0 {
			return notFound(id)
		}
		return conn.commit(ctx, nil)
	})
}

// listQuery is ListConnections' statement for opts and the page size.
// Only the filters in use go into it, so that the planner can use the
// (provider, id), (status, id) and (provider, status, id) indexes.
func listQuery(opts store.ListOptions, limit int) (string, []any) {
	q := `SELECT ` + connectionColumns + ` FROM connections WHERE id > $1`
	args := []any{opts.After}
	if opts.Provider != "" {
		args = append(args, opts.Provider)
		q += ` AND provider = $` + strconv.Itoa(len(args))
	}
	if opts.Status != "" {
		args = append(args, string(opts.Status))
		q += ` AND status = $` + strconv.Itoa(len(args))
	}
	// One row more than the page tells whether another page follows.
	args = append(args, limit+1)
	q += ` ORDER BY id LIMIT $` + strconv.Itoa(len(args))
	return q, args
}

// ListConnections returns a page of connections in byte order of id.
func (s *Store) ListConnections(ctx context.Context, opts store.ListOptions) (store.Page, error) {
	limit := opts.Limit
	switch {
	case limit < 0:
		return store.Page{}, fmt.Errorf("store/postgres: list limit %d is negative", limit)
	case limit == 0:
		limit = store.DefaultListLimit
	case limit > store.MaxListLimit:
		limit = store.MaxListLimit
	}
	if opts.Status != "" && !opts.Status.Valid() {
		return store.Page{}, fmt.Errorf("store/postgres: list status %q is not active, needs_reauth or revoked", opts.Status)
	}
	if !storableID(opts.Provider) || !storableID(opts.After) {
		return store.Page{}, errors.New("store/postgres: list provider and after must be UTF-8 text without NUL")
	}
	q, args := listQuery(opts, limit)
	var page store.Page
	err := s.do(ctx, "list connections", true, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, q, args...)
		if err != nil {
			return s.fail(ctx, "list connections", err)
		}
		page.Connections, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Connection, error) { return scanConnection(r) })
		return s.fail(ctx, "list connections", err)
	})
	if err != nil {
		return store.Page{}, err
	}
	if len(page.Connections) > limit {
		page.Connections = page.Connections[:limit]
		page.NextAfter = page.Connections[limit-1].ID
	}
	return page, nil
}

// asyncCommit, joined into a write (UPDATE … FROM asyncCommit), lets that
// write's transaction commit without waiting for its WAL record to reach
// disk (synchronous_commit off for that transaction alone). Other sessions
// see the write at once as usual; only a crash of PostgreSQL in the
// following moments could undo it. It is used for the refresh's
// bookkeeping, whose loss is safe (docs/architecture.md, "Durable and
// bookkeeping writes"): taking, renewing and releasing a lease, and taking
// and releasing a scheduling claim. Every write that carries a token or
// the mark that a refresh token is about to be sent stays synchronous, and
// since the WAL is one sequence, such a commit also makes every earlier
// bookkeeping write durable.
const asyncCommit = `(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit`

// leaseAttempts bounds how often AcquireLease retries when the lease was
// freed between its UPDATE and its read.
const leaseAttempts = 3

// AcquireLease takes the lease in one UPDATE that matches only a free,
// expired or own lease; "expired" is judged by the store's clock, passed as
// a parameter, not the database's now(). Concurrent UPDATEs of the row
// queue on its row lock and each re-checks the condition against the
// winner's committed lease, so exactly one owner wins. When the UPDATE
// matches nothing, the row is read to tell [store.ErrNotFound] from
// [store.ErrLeaseHeld]; if that read finds the lease free again (its holder
// released it in between), the UPDATE is tried again.
func (s *Store) AcquireLease(ctx context.Context, id, owner string, ttl time.Duration) (store.Connection, error) {
	if owner == "" {
		return store.Connection{}, fmt.Errorf("store/postgres: lease on %q: owner is empty", id)
	}
	if ttl <= 0 {
		return store.Connection{}, fmt.Errorf("store/postgres: lease on %q: ttl %v is not positive", id, ttl)
	}
	if err := checkText(id, "lease owner", owner); err != nil {
		return store.Connection{}, err
	}
	if !storableID(id) {
		return store.Connection{}, notFound(id)
	}
	now := stored(s.now())
	until := stored(now.Add(ttl))
	op := fmt.Sprintf("lease on %q", id)
	var out store.Connection
	var held bool
	err := s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		for range leaseAttempts {
			var err error
			out, err = scanConnection(conn.QueryRow(ctx, `UPDATE connections
				SET lease_owner = $2, lease_until = $3 FROM `+asyncCommit+`
				WHERE id = $1 AND (lease_owner IS NULL OR lease_until < $4 OR lease_owner = $2)
				RETURNING `+connectionColumns, id, owner, until, now))
			if !errors.Is(err, pgx.ErrNoRows) {
				held = false
				return s.fail(ctx, op, err)
			}
			out, err = scanConnection(conn.QueryRow(ctx, `SELECT `+connectionColumns+` FROM connections WHERE id = $1`, id))
			if errors.Is(err, pgx.ErrNoRows) {
				return notFound(id)
			}
			if err != nil {
				return s.fail(ctx, op, err)
			}
			held = true
			if out.LeaseOwner != "" && out.LeaseOwner != owner && !out.LeaseUntil.Before(now) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return store.Connection{}, err
	}
	if held {
		return out, fmt.Errorf("store/postgres: %s: %w", op, store.ErrLeaseHeld)
	}
	return out, nil
}

// ReleaseLease frees the lease if owner holds it; otherwise, or if there is
// no such id, it does nothing.
func (s *Store) ReleaseLease(ctx context.Context, id, owner string) error {
	if owner == "" || !storableID(id) || !storableID(owner) {
		return nil
	}
	op := fmt.Sprintf("release lease on %q", id)
	return s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, `UPDATE connections SET lease_owner = NULL, lease_until = NULL FROM `+asyncCommit+`
			WHERE id = $1 AND lease_owner = $2`, id, owner)
		return s.fail(ctx, op, err)
	})
}
