package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.SealedKeys = (*Store)(nil)

// SealedKeyIDs reads each sealed value's key id from its header in SQL, so
// only the distinct ids and their counts leave the database.
func (s *Store) SealedKeyIDs(ctx context.Context) (map[string]int64, error) {
	const op = "sealed key ids"
	out := map[string]int64{}
	err := s.do(ctx, op, true, func(conn *pgxpool.Conn) error {
		clear(out)
		rows, err := conn.Query(ctx, `WITH sealed(v) AS (
				SELECT access_token FROM connections
				UNION ALL SELECT refresh_token FROM connections
				UNION ALL SELECT verifier FROM connect_sessions
			UNION ALL SELECT client_secret FROM mcp_registrations
			)
			SELECT substring(v FROM 3 FOR get_byte(v, 1)), count(*)
			FROM sealed
			WHERE CASE WHEN v IS NULL OR length(v) < 3 THEN false
				ELSE get_byte(v, 0) = 1 AND get_byte(v, 1) > 0 AND length(v) >= 2 + get_byte(v, 1) END
			GROUP BY 1`)
		if err != nil {
			return s.fail(ctx, op, err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id []byte
				n  int64
			)
			if err := rows.Scan(&id, &n); err != nil {
				return s.fail(ctx, op, err)
			}
			out[string(id)] += n
		}
		return s.fail(ctx, op, rows.Err())
	})
	return out, err
}
