package sqlite

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

// TestListPlans: every filter combination of ListConnections is served by
// an index in id order, never by a scan of the table or a sort, so a page
// costs the same deep into a million rows (BENCHMARKS.md, "A million
// connections"). SQLite plans without statistics here, as on a database
// that was never analyzed.
func TestListPlans(t *testing.T) {
	s, _ := openTemp(t, time.Now)
	want := map[string]store.ListOptions{
		"connections_provider_status_id": {Provider: "acme", Status: store.StatusActive, After: "x"},
		"connections_status_id":          {Status: store.StatusNeedsReauth},
		"connections_provider_id":        {Provider: "acme", After: "x"},
	}
	for index, opts := range want {
		q, args := listQuery(opts, 100)
		rows, err := s.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		text := strings.Join(plan, "; ")
		if !strings.Contains(text, "INDEX "+index) || strings.Contains(text, "TEMP B-TREE") {
			t.Errorf("list %+v: plan %q, want a search of %s with no sort", opts, text, index)
		}
	}
}
