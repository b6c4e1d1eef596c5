package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.ConnectionCounter = (*Store)(nil)

// countConnectionsSQL groups by provider and status, splitting active
// connections with a failure off as store.CountedFailing. It reads every
// row once: fine for the scrape interval it serves, which the metrics
// collector caches.
const countConnectionsSQL = `SELECT provider,
	CASE WHEN status = 'active' AND failure IS NOT NULL THEN 'failing' ELSE status END AS s,
	count(*)
	FROM connections GROUP BY 1, 2`

// CountConnections returns the number of connections per provider and
// status, with active connections whose last refresh failed counted as
// [store.CountedFailing].
func (s *Store) CountConnections(ctx context.Context) (map[store.ConnectionGroup]int, error) {
	var out map[store.ConnectionGroup]int
	err := s.do(ctx, "count connections", true, func(conn *pgxpool.Conn) error {
		out = make(map[store.ConnectionGroup]int)
		rows, err := conn.Query(ctx, countConnectionsSQL)
		if err != nil {
			return s.fail(ctx, "count connections", err)
		}
		defer rows.Close()
		for rows.Next() {
			var g store.ConnectionGroup
			var n int64
			if err := rows.Scan(&g.Provider, &g.Status, &n); err != nil {
				return s.fail(ctx, "count connections", err)
			}
			out[g] = int(n)
		}
		return s.fail(ctx, "count connections", rows.Err())
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
