package server

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestImportBatch: a batch stores every item as the single import would
// (same view, same next refresh by the same lifecycle rules), and the
// tokens are served.
func TestImportBatch(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	expiresAt := h.clock.Now().Add(90 * time.Minute).UTC().Format(time.RFC3339)
	item := func(id, access, refresh string) map[string]any {
		return map[string]any{"id": id, "provider": provAcme, "access_token": access, "refresh_token": refresh,
			"expires_at": expiresAt, "token_type": "Bearer", "scope": "read", "metadata": map[string]any{"team": "a"}}
	}
	a1, r1 := h.issue()
	if resp := h.do("POST", "/v1/connections", h.adminKey, item("single", a1, r1), nil); resp.status != http.StatusCreated {
		t.Fatalf("single import: %d %s", resp.status, resp.body)
	}
	var items []any
	accesses := map[string]string{}
	for i := range 3 {
		a, r := h.issue()
		id := fmt.Sprintf("batched-%d", i)
		accesses[id] = a
		items = append(items, item(id, a, r))
	}
	a, _ := h.issue()
	accesses["no-refresh"] = a
	items = append(items, map[string]any{"id": "no-refresh", "provider": provAcme, "access_token": a, "expires_in": 600})

	resp := h.do("POST", "/v1/connections:batch", h.adminKey, map[string]any{"connections": items}, nil)
	if resp.status != http.StatusCreated {
		t.Fatalf("batch: status %d: %s", resp.status, resp.body)
	}
	if got := resp.json(t)["created"]; got != float64(4) {
		t.Errorf("created = %v, want 4", got)
	}
	if containsAny(resp.body, a1, r1, a) {
		t.Errorf("batch answer contains a token")
	}

	single := decodeView(t, h.do("GET", "/v1/connections/single", h.adminKey, nil, nil))
	for i := range 3 {
		id := fmt.Sprintf("batched-%d", i)
		v := decodeView(t, h.do("GET", "/v1/connections/"+id, h.adminKey, nil, nil))
		want := single
		want.ID = id
		if !reflect.DeepEqual(v, want) {
			t.Errorf("%s = %+v,\nwant as the single import: %+v", id, v, want)
		}
	}
	if single.NextRefreshAt == nil {
		t.Fatalf("the single import has no next refresh")
	}
	nr := decodeView(t, h.do("GET", "/v1/connections/no-refresh", h.adminKey, nil, nil))
	if nr.HasRefreshToken || nr.Version != 1 || nr.ExpiresAt == nil || !nr.ExpiresAt.Equal(h.clock.Now().Add(600*time.Second)) {
		t.Errorf("no-refresh = %+v", nr)
	}
	for id, access := range accesses {
		r := h.do("GET", "/v1/connections/"+id+"/token", h.tokensKey, nil, nil)
		if r.status != http.StatusOK || r.json(t)["access_token"] != access {
			t.Errorf("token of %s: status %d, not the imported token", id, r.status)
		}
	}
}

// TestImportBatchErrors: a bad item is named by its index (and id) with
// the field that is wrong, and nothing of the batch is stored.
func TestImportBatchErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("taken", provAcme, nil)
	good := func(id string) map[string]any {
		return map[string]any{"id": id, "provider": provAcme, "access_token": "at-" + id, "expires_in": 3600}
	}
	with := func(id string, k string, v any) map[string]any {
		m := good(id)
		m[k] = v
		return m
	}
	tests := []struct {
		name       string
		body       any
		status     int
		code, want string
	}{
		{"bad expires_in", map[string]any{"connections": []any{good("g-0"), with("g-1", "expires_in", -5)}},
			400, "invalid_request", `connections[1] (id "g-1"): expires_in: `},
		{"bad id", map[string]any{"connections": []any{good("g-0"), good("g-1"), with("g-2", "id", "no spaces")}},
			400, "invalid_request", `connections[2]: id: `},
		{"unknown provider", map[string]any{"connections": []any{good("g-0"), with("g-1", "provider", "nope")}},
			400, "invalid_request", `connections[1] (id "g-1"): provider: unknown provider "nope"`},
		{"missing access token", map[string]any{"connections": []any{good("g-0"), with("g-1", "access_token", "")}},
			400, "invalid_request", `connections[1] (id "g-1"): access_token: is required`},
		{"bad time", map[string]any{"connections": []any{good("g-0"), with("g-1", "expires_at", "tomorrow")}},
			400, "invalid_request", `connections[1] (id "g-1"): expires_at: must be an RFC 3339 time`},
		{"unknown field", map[string]any{"connections": []any{good("g-0"), with("g-1", "acces_token", "x")}},
			400, "invalid_request", `connections[1]: unknown field "acces_token"`},
		{"wrong type", map[string]any{"connections": []any{good("g-0"), with("g-1", "expires_in", "soon")}},
			400, "invalid_request", `connections[1]: expires_in: must be a number`},
		{"not an object", map[string]any{"connections": []any{good("g-0"), "g-1"}},
			400, "invalid_request", `connections[1]: must be a JSON object`},
		{"client credentials", map[string]any{"connections": []any{good("g-0"), with("g-1", "grant", "client_credentials")}},
			400, "invalid_request", `connections[1] (id "g-1"): grant: `},
		{"repeated id", map[string]any{"connections": []any{good("g-0"), good("g-1"), good("g-0")}},
			400, "invalid_request", `connections[2] (id "g-0"): id: repeats the id of item 0`},
		{"taken id", map[string]any{"connections": []any{good("g-0"), good("g-1"), good("taken")}},
			409, "already_exists", `connections[2] (id "taken"): a connection with this id already exists`},
		{"no connections", map[string]any{"items": []any{good("g-0")}},
			400, "invalid_request", `unknown field "items"`},
		{"empty", map[string]any{"connections": []any{}}, 400, "invalid_request", "connections: is empty"},
		{"not an array", map[string]any{"connections": good("g-0")}, 400, "invalid_request", "connections: must be an array"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do("POST", "/v1/connections:batch", h.adminKey, tc.body, nil)
			code, msg := resp.errCode(t)
			if resp.status != tc.status || code != tc.code || !strings.HasPrefix(msg, tc.want) {
				t.Errorf("status %d, %s: %q; want %d, %s: %q…", resp.status, code, msg, tc.status, tc.code, tc.want)
			}
			for _, id := range []string{"g-0", "g-1"} {
				if r := h.do("GET", "/v1/connections/"+id, h.adminKey, nil, nil); r.status != http.StatusNotFound {
					t.Errorf("%s after a refused batch: status %d, want 404 (nothing stored)", id, r.status)
				}
			}
		})
	}

	t.Run("too many", func(t *testing.T) {
		items := make([]any, 1001)
		for i := range items {
			items[i] = good(fmt.Sprintf("m-%d", i))
		}
		resp := h.do("POST", "/v1/connections:batch", h.adminKey, map[string]any{"connections": items}, nil)
		if code, msg := resp.errCode(t); resp.status != 400 || !strings.Contains(msg, "at most 1000") {
			t.Errorf("1001 items: %d %s %q, want 400 naming the limit", resp.status, code, msg)
		}
		if r := h.do("GET", "/v1/connections/m-0", h.adminKey, nil, nil); r.status != http.StatusNotFound {
			t.Errorf("m-0 after a refused batch: status %d", r.status)
		}
	})
}

// TestImportBatchScope: only admin keys import, as for the single import.
func TestImportBatchScope(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	body := map[string]any{"connections": []any{map[string]any{"id": "team-a-1", "provider": provAcme, "access_token": "x"}}}
	keys := map[string]string{
		"tokens":         h.tokensKey,
		"proxy":          h.newKey(ScopeProxy),
		"connect":        h.newKey(ScopeConnect),
		"scoped tokens":  h.newScopedKey(KeySpec{Name: "s", Role: ScopeTokens, Connections: []string{"team-a-*"}}),
		"scoped connect": h.newScopedKey(KeySpec{Name: "c", Role: ScopeConnect, Connections: []string{"team-a-*"}}),
	}
	for name, key := range keys {
		if resp := h.do("POST", "/v1/connections:batch", key, body, nil); resp.status != http.StatusForbidden {
			t.Errorf("%s key: status %d, want 403", name, resp.status)
		}
	}
	if resp := h.do("POST", "/v1/connections:batch", "", body, nil); resp.status != http.StatusUnauthorized {
		t.Errorf("no key: status %d, want 401", resp.status)
	}
	if r := h.do("GET", "/v1/connections/team-a-1", h.adminKey, nil, nil); r.status != http.StatusNotFound {
		t.Errorf("team-a-1 stored by a refused caller: status %d", r.status)
	}
	if resp := h.do("POST", "/v1/connections:batch", h.adminKey, body, nil); resp.status != http.StatusCreated {
		t.Errorf("admin key: status %d %s, want 201", resp.status, resp.body)
	}
}
