package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.Scheduling = (*Store)(nil)

// ClaimDue claims due connections in one UPDATE on the writer connection,
// so two schedulers sharing the file (or one scheduler's overlapping
// cycles) never get the same id: SQLite runs one writer at a time. The
// claim sets scheduled_by/scheduled_until and leaves next_refresh_at and
// version alone, so the broker, reading the row under its lease, still sees
// the connection due and no write it makes meanwhile is lost.
func (s *Store) ClaimDue(ctx context.Context, owner string, now time.Time, limit int, claimTTL time.Duration) ([]store.Claim, error) {
	if err := checkClaim(owner, limit, claimTTL); err != nil {
		return nil, err
	}
	const op = "claim due connections"
	rows, err := s.w.QueryContext(ctx, `UPDATE connections SET scheduled_by = ?, scheduled_until = ?
		WHERE id IN (SELECT id FROM connections
			WHERE status = 'active' AND next_refresh_at <= ?
				AND (scheduled_until IS NULL OR scheduled_until <= ?)
			ORDER BY next_refresh_at LIMIT ?)
		RETURNING id, provider, next_refresh_at`,
		owner, now.Add(claimTTL).UnixMicro(), now.UnixMicro(), now.UnixMicro(), limit)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer rows.Close()
	var out []store.Claim
	for rows.Next() {
		var (
			c    store.Claim
			next sql.NullInt64
		)
		if err := rows.Scan(&c.ID, &c.Provider, &next); err != nil {
			return nil, s.fail(ctx, op, err)
		}
		c.NextRefreshAt = fromMicros(next)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	// RETURNING comes back in no promised order.
	slices.SortFunc(out, func(a, b store.Claim) int {
		return cmp.Or(a.NextRefreshAt.Compare(b.NextRefreshAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

const releaseClaimQuery = `UPDATE connections SET scheduled_by = '', scheduled_until = NULL
		WHERE id = ? AND scheduled_by = ? AND scheduled_by != ''`

// ReleaseClaim clears owner's claim on id.
func (s *Store) ReleaseClaim(ctx context.Context, owner, id string) error {
	_, err := s.releaseClaimStmt.ExecContext(ctx, id, owner)
	return s.fail(ctx, fmt.Sprintf("release claim on %q", id), err)
}

// OldestDue answers from the (status, next_refresh_at) index.
func (s *Store) OldestDue(ctx context.Context, now time.Time) (time.Time, bool, error) {
	var oldest sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT min(next_refresh_at) FROM connections
		WHERE status = 'active' AND next_refresh_at <= ?`, now.UnixMicro()).Scan(&oldest)
	if err != nil {
		return time.Time{}, false, s.fail(ctx, "oldest due connection", err)
	}
	return fromMicros(oldest), oldest.Valid, nil
}

func checkClaim(owner string, limit int, claimTTL time.Duration) error {
	switch {
	case owner == "":
		return fmt.Errorf("store/sqlite: claim due connections: owner is empty")
	case limit <= 0:
		return fmt.Errorf("store/sqlite: claim due connections: limit %d is not positive", limit)
	case claimTTL <= 0:
		return fmt.Errorf("store/sqlite: claim due connections: claim ttl %v is not positive", claimTTL)
	}
	return nil
}
