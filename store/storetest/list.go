package storetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tokenbroker/tokenbroker/store"
)

var listTests = []struct {
	name string
	fn   testFunc
}{
	{"Empty", testListEmpty},
	{"OrderAndFields", testListOrderAndFields},
	{"Filters", testListFilters},
	{"Pagination", testListPagination},
	{"AfterMissingID", testListAfterMissingID},
	{"Limits", testListLimits},
	{"Invalid", testListInvalid},
}

func ids(cs []store.Connection) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

// listAll pages through everything that matches opts and checks the paging
// contract on the way: no page larger than the limit, no id twice, ids
// ascending across pages, and NextAfter "" exactly on the page holding the
// last row.
func listAll(t *testing.T, s store.Store, opts store.ListOptions, total int) []string {
	t.Helper()
	var all []string
	seen := map[string]bool{}
	limit := opts.Limit
	for pages := 0; ; pages++ {
		if pages > total+1 {
			t.Fatalf("ListConnections(%+v): still paging after %d pages", opts, pages)
		}
		page, err := s.ListConnections(t.Context(), opts)
		if err != nil {
			t.Fatalf("ListConnections(%+v): %v", opts, err)
		}
		if len(page.Connections) > limit {
			t.Errorf("page has %d rows, limit %d", len(page.Connections), limit)
		}
		for _, c := range page.Connections {
			if seen[c.ID] {
				t.Errorf("id %q listed twice", c.ID)
			}
			seen[c.ID] = true
			all = append(all, c.ID)
		}
		if page.NextAfter == "" {
			if len(page.Connections) == 0 && pages > 0 {
				t.Errorf("ListConnections(%+v): the previous page had a NextAfter but this page is empty; NextAfter must be empty on the page holding the last row", opts)
			}
			break
		}
		if len(page.Connections) == 0 || page.NextAfter != page.Connections[len(page.Connections)-1].ID {
			t.Fatalf("NextAfter %q is not the last id of a non-empty page %v", page.NextAfter, ids(page.Connections))
		}
		opts.After = page.NextAfter
	}
	if !slices.IsSorted(all) {
		t.Errorf("ids not ascending across pages: %v", all)
	}
	if len(all) != total {
		t.Errorf("paged over %d rows, want %d", len(all), total)
	}
	return all
}

func testListEmpty(t *testing.T, s store.Backend, clk *Clock) {
	page, err := s.ListConnections(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatalf("ListConnections: %v", err)
	}
	if len(page.Connections) != 0 || page.NextAfter != "" {
		t.Errorf("empty store: %d rows, NextAfter %q; want none and \"\"", len(page.Connections), page.NextAfter)
	}
}

func testListOrderAndFields(t *testing.T, s store.Backend, clk *Clock) {
	// Byte order differs from locale order for several of these: "B" < "a",
	// "Z9" < "a", "a-b" < "a.b" < "a_b", and "ä" sorts last.
	in := []string{"b", "ä", "a_b", "B", "10", "a", "a.b", "Z9", "9", "a-b", "z"}
	for i, id := range in {
		c := fullConnection(id, clk.Now())
		if i%2 == 0 {
			c = minimalConnection(id)
		}
		mustCreate(t, s, c)
	}
	want := slices.Clone(in)
	slices.Sort(want)

	page, err := s.ListConnections(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatalf("ListConnections: %v", err)
	}
	if got := ids(page.Connections); !slices.Equal(got, want) {
		t.Errorf("order = %q, want byte order %q", got, want)
	}
	if page.NextAfter != "" {
		t.Errorf("NextAfter = %q on the only page, want \"\"", page.NextAfter)
	}
	for _, c := range page.Connections {
		expectSame(t, "listed "+c.ID+" vs GetConnection", c, mustGet(t, s, c.ID))
	}
}

func testListFilters(t *testing.T, s store.Backend, clk *Clock) {
	rows := []struct {
		id       string
		provider string
		status   store.Status
	}{
		{"c01", "acme", store.StatusActive},
		{"c02", "globex", store.StatusActive},
		{"c03", "acme", store.StatusNeedsReauth},
		{"c04", "acme", store.StatusRevoked},
		{"c05", "globex", store.StatusNeedsReauth},
		{"c06", "acme", store.StatusActive},
		{"c07", "acme-2", store.StatusActive},
	}
	for _, r := range rows {
		c := minimalConnection(r.id)
		c.Provider, c.Status = r.provider, r.status
		mustCreate(t, s, c)
	}
	tests := []struct {
		opts store.ListOptions
		want []string
	}{
		{store.ListOptions{}, []string{"c01", "c02", "c03", "c04", "c05", "c06", "c07"}},
		{store.ListOptions{Provider: "acme"}, []string{"c01", "c03", "c04", "c06"}},
		{store.ListOptions{Provider: "globex"}, []string{"c02", "c05"}},
		{store.ListOptions{Provider: "nobody"}, nil},
		{store.ListOptions{Status: store.StatusActive}, []string{"c01", "c02", "c06", "c07"}},
		{store.ListOptions{Status: store.StatusNeedsReauth}, []string{"c03", "c05"}},
		{store.ListOptions{Status: store.StatusRevoked}, []string{"c04"}},
		{store.ListOptions{Provider: "acme", Status: store.StatusActive}, []string{"c01", "c06"}},
		{store.ListOptions{Provider: "globex", Status: store.StatusRevoked}, nil},
		{store.ListOptions{Provider: "acme", After: "c03"}, []string{"c04", "c06"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%+v", tc.opts), func(t *testing.T) {
			page, err := s.ListConnections(t.Context(), tc.opts)
			if err != nil {
				t.Fatalf("ListConnections: %v", err)
			}
			if got := ids(page.Connections); !slices.Equal(got, tc.want) {
				t.Errorf("ids = %q, want %q", got, tc.want)
			}
			if page.NextAfter != "" {
				t.Errorf("NextAfter = %q, want \"\"", page.NextAfter)
			}
		})
	}
}

func testListPagination(t *testing.T, s store.Backend, clk *Clock) {
	var acme []string
	for i := range 12 {
		c := minimalConnection(fmt.Sprintf("conn-%02d", (i*5)%12)) // scrambled insert order
		if i%3 == 0 {
			c.Provider = "globex"
		} else {
			acme = append(acme, c.ID)
		}
		mustCreate(t, s, c)
	}
	slices.Sort(acme)
	tests := []struct {
		opts  store.ListOptions
		total int
	}{
		{store.ListOptions{Limit: 1}, 12},
		{store.ListOptions{Limit: 3}, 12}, // exact multiple: no trailing empty page
		{store.ListOptions{Limit: 5}, 12},
		{store.ListOptions{Limit: 12}, 12},
		{store.ListOptions{Limit: 13}, 12},
		{store.ListOptions{Limit: 2, Provider: "acme"}, 8},
		{store.ListOptions{Limit: 3, Provider: "acme"}, 8},
		{store.ListOptions{Limit: 4, Provider: "globex"}, 4},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%+v", tc.opts), func(t *testing.T) {
			got := listAll(t, s, tc.opts, tc.total)
			if tc.opts.Provider == "acme" && !slices.Equal(got, acme) {
				t.Errorf("acme ids = %q, want %q", got, acme)
			}
		})
	}
}

func testListAfterMissingID(t *testing.T, s store.Backend, clk *Clock) {
	for _, id := range []string{"a", "b", "d", "e"} {
		mustCreate(t, s, minimalConnection(id))
	}
	for _, tc := range []struct {
		after string
		want  []string
	}{
		{"c", []string{"d", "e"}},
		{"b", []string{"d", "e"}},
		{"A", []string{"a", "b", "d", "e"}},
		{"e", nil},
		{"f", nil},
	} {
		page, err := s.ListConnections(t.Context(), store.ListOptions{After: tc.after})
		if err != nil {
			t.Fatalf("ListConnections(After %q): %v", tc.after, err)
		}
		if got := ids(page.Connections); !slices.Equal(got, tc.want) {
			t.Errorf("After %q: ids = %q, want %q", tc.after, got, tc.want)
		}
	}
}

func testListLimits(t *testing.T, s store.Backend, clk *Clock) {
	total := store.MaxListLimit + 1
	for i := range total {
		mustCreate(t, s, minimalConnection(fmt.Sprintf("conn-%05d", i)))
	}
	tests := []struct {
		limit, want int
	}{
		{0, store.DefaultListLimit},
		{store.MaxListLimit, store.MaxListLimit},
		{store.MaxListLimit + 1, store.MaxListLimit},
		{1 << 30, store.MaxListLimit},
	}
	for _, tc := range tests {
		page, err := s.ListConnections(t.Context(), store.ListOptions{Limit: tc.limit})
		if err != nil {
			t.Fatalf("ListConnections(Limit %d): %v", tc.limit, err)
		}
		if len(page.Connections) != tc.want {
			t.Errorf("Limit %d: %d rows, want %d", tc.limit, len(page.Connections), tc.want)
		}
		if wantNext := fmt.Sprintf("conn-%05d", tc.want-1); page.NextAfter != wantNext {
			t.Errorf("Limit %d: NextAfter = %q, want %q", tc.limit, page.NextAfter, wantNext)
		}
	}
	listAll(t, s, store.ListOptions{Limit: store.MaxListLimit}, total)
}

func testListInvalid(t *testing.T, s store.Backend, clk *Clock) {
	mustCreate(t, s, minimalConnection("conn-1"))
	for _, opts := range []store.ListOptions{
		{Limit: -1},
		{Status: "refreshing"},
		{Status: "ACTIVE"},
	} {
		if _, err := s.ListConnections(t.Context(), opts); err == nil {
			t.Errorf("ListConnections(%+v) succeeded, want an error", opts)
		}
	}
}
