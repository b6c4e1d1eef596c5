package postgres

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenbroker/tokenbroker/store"
)

// TestListPlans: a list filtered by provider and status can be served by
// the (provider, status, id) index in id order, without a sort. The test
// table is tiny, so sequential scans are switched off to ask the planner
// what it would do with a table too large to scan.
func TestListPlans(t *testing.T) {
	s, _ := openFresh(t, Options{Now: time.Now})
	err := s.pool.AcquireFunc(t.Context(), func(c *pgxpool.Conn) error {
		if _, err := c.Exec(t.Context(), "SET enable_seqscan = off"); err != nil {
			return err
		}
		defer c.Exec(t.Context(), "RESET enable_seqscan")
		q, args := listQuery(store.ListOptions{Provider: "acme", Status: store.StatusActive, After: "x"}, 100)
		rows, err := c.Query(t.Context(), "EXPLAIN "+q, args...)
		if err != nil {
			return err
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		plan := strings.Join(lines, "\n")
		if !strings.Contains(plan, "connections_provider_status_id") || strings.Contains(plan, "Sort") {
			t.Errorf("plan of a provider and status list:\n%s\nwant connections_provider_status_id, no sort", plan)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
