package sqlite

import (
	"context"

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
	FROM connections GROUP BY provider, s`

// CountConnections returns the number of connections per provider and
// status, with active connections whose last refresh failed counted as
// [store.CountedFailing].
func (s *Store) CountConnections(ctx context.Context) (map[store.ConnectionGroup]int, error) {
	rows, err := s.r.QueryContext(ctx, countConnectionsSQL)
	if err != nil {
		return nil, s.fail(ctx, "count connections", err)
	}
	defer rows.Close()
	out := make(map[store.ConnectionGroup]int)
	for rows.Next() {
		var g store.ConnectionGroup
		var n int
		if err := rows.Scan(&g.Provider, &g.Status, &n); err != nil {
			return nil, s.fail(ctx, "count connections", err)
		}
		out[g] = n
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, "count connections", err)
	}
	return out, nil
}
