package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.Scheduling = (*Store)(nil)

// ClaimDue claims due connections with SELECT … FOR UPDATE SKIP LOCKED and
// marks them in the same statement, so replicas claiming at the same moment
// each take different rows without waiting for one another; a row another
// replica claimed and committed meanwhile is re-checked under the lock
// (READ COMMITTED re-evaluates the WHERE clause) and dropped. The claim sets
// scheduled_by/scheduled_until and leaves next_refresh_at and version
// alone: no change notification, and the broker still sees the connection
// due when it reads it under its lease.
func (s *Store) ClaimDue(ctx context.Context, owner string, now time.Time, limit int, claimTTL time.Duration) ([]store.Claim, error) {
	switch {
	case owner == "":
		return nil, fmt.Errorf("store/postgres: claim due connections: owner is empty")
	case limit <= 0:
		return nil, fmt.Errorf("store/postgres: claim due connections: limit %d is not positive", limit)
	case claimTTL <= 0:
		return nil, fmt.Errorf("store/postgres: claim due connections: claim ttl %v is not positive", claimTTL)
	}
	if err := checkText("", "id", owner); err != nil {
		return nil, fmt.Errorf("store/postgres: claim due connections: owner is not valid UTF-8 text without NUL")
	}
	const op = "claim due connections"
	var out []store.Claim
	err := s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		out = out[:0]
		rows, err := conn.Query(ctx, `WITH due AS (
				SELECT id FROM connections
				WHERE status = 'active' AND next_refresh_at <= $1
					AND (scheduled_until IS NULL OR scheduled_until <= $1)
				ORDER BY next_refresh_at
				LIMIT $2
				FOR UPDATE SKIP LOCKED)
			UPDATE connections c SET scheduled_by = $3, scheduled_until = $4
			FROM due, `+asyncCommit+` WHERE c.id = due.id
			RETURNING c.id, c.provider, c.next_refresh_at`,
			stored(now), limit, owner, stored(now.Add(claimTTL)))
		if err != nil {
			return s.fail(ctx, op, err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				c    store.Claim
				next pgtype.Timestamptz
			)
			if err := rows.Scan(&c.ID, &c.Provider, &next); err != nil {
				return s.fail(ctx, op, err)
			}
			c.NextRefreshAt = fromTstz(next)
			out = append(out, c)
		}
		return s.fail(ctx, op, rows.Err())
	})
	if err != nil {
		return nil, err
	}
	// RETURNING comes back in no promised order.
	slices.SortFunc(out, func(a, b store.Claim) int {
		return cmp.Or(a.NextRefreshAt.Compare(b.NextRefreshAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// ReleaseClaim clears owner's claim on id.
func (s *Store) ReleaseClaim(ctx context.Context, owner, id string) error {
	if !storableID(id) || !storableID(owner) {
		return nil
	}
	op := fmt.Sprintf("release claim on %q", id)
	return s.do(ctx, op, false, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, `UPDATE connections SET scheduled_by = '', scheduled_until = NULL FROM `+asyncCommit+`
			WHERE id = $1 AND scheduled_by = $2 AND scheduled_by != ''`, id, owner)
		return s.fail(ctx, op, err)
	})
}

// OldestDue answers from the (status, next_refresh_at) index.
func (s *Store) OldestDue(ctx context.Context, now time.Time) (time.Time, bool, error) {
	const op = "oldest due connection"
	var oldest pgtype.Timestamptz
	err := s.do(ctx, op, true, func(conn *pgxpool.Conn) error {
		return s.fail(ctx, op, conn.QueryRow(ctx, `SELECT min(next_refresh_at) FROM connections
			WHERE status = 'active' AND next_refresh_at <= $1`, stored(now)).Scan(&oldest))
	})
	if err != nil {
		return time.Time{}, false, err
	}
	return fromTstz(oldest), oldest.Valid, nil
}
