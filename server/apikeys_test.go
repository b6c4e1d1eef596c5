package server

import (
	"net/http"
	"strings"
	"testing"
)

// TestAPIKeysRoutes: an admin creates a scoped key through the API, which
// works in its scope only, lists it without a secret, and revokes it: it
// stops working at once here although keys are cached, and both changes
// are in the audit trail under the admin's key.
func TestAPIKeysRoutes(t *testing.T) {
	h, rec := auditRig(t)
	h.importConn("team-a-1", provAcme, nil)
	h.importConn("team-b-1", provAcme, nil)

	resp := h.do("POST", "/v1/api-keys", h.adminKey, map[string]any{
		"name": "svc", "scope": "proxy", "connections": []string{"team-a-*"},
	}, nil)
	if resp.status != http.StatusCreated || resp.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create: %d %s", resp.status, resp.body)
	}
	var created struct {
		ID, Key, Scope string
		Connections    []string
	}
	decodeJSON(t, resp.body, &created)
	h.tokens.add(created.Key)
	if !strings.HasPrefix(created.Key, APIKeyPrefix) || created.Scope != ScopeProxy || len(created.Connections) != 1 {
		t.Fatalf("created %+v", created)
	}
	if r := h.do("GET", "/v1/proxy/team-a-1/x", created.Key, nil, nil); r.status != http.StatusOK {
		t.Errorf("in scope: %d", r.status)
	}
	if r := h.do("GET", "/v1/proxy/team-b-1/x", created.Key, nil, nil); r.status != http.StatusNotFound {
		t.Errorf("out of scope: %d", r.status)
	}
	if r := h.do("GET", "/v1/connections/team-a-1/token", created.Key, nil, nil); r.status != http.StatusForbidden {
		t.Errorf("proxy key reading a token: %d", r.status)
	}

	list := h.do("GET", "/v1/api-keys", h.adminKey, nil, nil)
	if list.status != http.StatusOK || !strings.Contains(string(list.body), created.ID) || strings.Contains(string(list.body), created.Key) ||
		strings.Contains(string(list.body), `"hash"`) || strings.Contains(string(list.body), `"key":`) {
		t.Errorf("list: %d %s", list.status, list.body)
	}

	for _, bad := range []map[string]any{
		{"name": "x", "scope": "admin", "connections": []string{"a-*"}},
		{"name": "x", "scope": "root"},
		{"scope": "tokens"},
	} {
		if r := h.do("POST", "/v1/api-keys", h.adminKey, bad, nil); r.status != http.StatusBadRequest {
			t.Errorf("create %v: %d, want 400", bad, r.status)
		}
	}
	if r := h.do("DELETE", "/v1/api-keys/nope", h.adminKey, nil, nil); r.status != http.StatusNotFound {
		t.Errorf("revoke unknown: %d", r.status)
	}
	if r := h.do("DELETE", "/v1/api-keys/"+created.ID, h.adminKey, nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := h.do("GET", "/v1/proxy/team-a-1/x", created.Key, nil, nil); r.status != http.StatusUnauthorized {
		t.Errorf("revoked key: %d, want 401 at once", r.status)
	}

	if err := rec.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{ActionKeyCreate, ActionKeyRevoke} {
		r := h.do("GET", "/v1/audit?action="+action, h.adminKey, nil, nil)
		if !strings.Contains(string(r.body), `"actor":"test admin"`) || !strings.Contains(string(r.body), "key="+created.ID) {
			t.Errorf("audit of %s: %s", action, r.body)
		}
		if strings.Contains(string(r.body), created.Key) {
			t.Errorf("audit of %s holds the secret", action)
		}
	}
}
