package sqlite

import (
	"context"
	"strings"

	"github.com/tokenbroker/tokenbroker/store"
)

var _ store.SealedKeys = (*Store)(nil)

// byteValues is the blob of the bytes 1 to 255: instr(byteValues, b) is
// the value of the one-byte blob b, which SQLite has no function for.
var byteValues = func() string {
	var b strings.Builder
	for i := 1; i <= 255; i++ {
		b.WriteByte(byte(i))
	}
	return b.String()
}()

// SealedKeyIDs reads each sealed value's key id from its header in SQL, so
// only the distinct ids and their counts leave the database.
func (s *Store) SealedKeyIDs(ctx context.Context) (map[string]int64, error) {
	const op = "sealed key ids"
	rows, err := s.r.QueryContext(ctx, `WITH sealed(v) AS (
			SELECT access_token FROM connections
			UNION ALL SELECT refresh_token FROM connections
			UNION ALL SELECT verifier FROM connect_sessions
			UNION ALL SELECT client_secret FROM mcp_registrations
		)
		SELECT CAST(substr(v, 3, instr(CAST(?1 AS BLOB), substr(v, 2, 1))) AS TEXT), count(*)
		FROM sealed
		WHERE v IS NOT NULL AND length(v) > 2 AND substr(v, 1, 1) = X'01'
			AND instr(CAST(?1 AS BLOB), substr(v, 2, 1)) > 0
		GROUP BY 1`, []byte(byteValues))
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var (
			id string
			n  int64
		)
		if err := rows.Scan(&id, &n); err != nil {
			return nil, s.fail(ctx, op, err)
		}
		out[id] += n
	}
	return out, s.fail(ctx, op, rows.Err())
}
