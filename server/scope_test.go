package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestMatchPattern(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"team-a-*", "team-a-1", true},
		{"team-a-*", "team-a-", true},
		{"team-a-*", "team-b-1", false},
		{"team-a-*", "xteam-a-1", false},
		{"*", "anything", true},
		{"exact", "exact", true},
		{"exact", "exactly", false},
		{"*-prod", "billing-prod", true},
		{"*-prod", "billing-prod-2", false},
		{"a*b*c", "a-x-b-y-c", true},
		{"a*b*c", "a-x-c-y-b", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
	} {
		if got := matchPattern(c.p, c.s); got != c.want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}

func TestNewAPIKeyValidatesScope(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		name string
		spec KeySpec
		want string
	}{
		{"unknown role", KeySpec{Name: "x", Role: "root"}, `"root"`},
		{"scoped admin", KeySpec{Name: "x", Role: ScopeAdmin, Connections: []string{"a-*"}}, "admin keys cannot be limited"},
		{"bad pattern", KeySpec{Name: "x", Role: ScopeProxy, Connections: []string{"a/b"}}, `"a/b"`},
		{"bad provider", KeySpec{Name: "x", Role: ScopeTokens, Providers: []string{"git hub"}}, `"git hub"`},
	} {
		if _, _, err := NewAPIKey(c.spec, now); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %s", c.name, err, c.want)
		}
	}
	_, k, err := NewAPIKey(KeySpec{Name: "svc", Role: ScopeProxy, Connections: []string{"team-a-*"}, Providers: []string{"github"}}, now)
	if err != nil || k.Scope != ScopeProxy || len(k.Connections) != 1 || k.Providers[0] != "github" {
		t.Errorf("NewAPIKey = %+v, %v", k, err)
	}
}

// scopeRig is a connect harness with two connections, one in and one out
// of the scoped keys' pattern, and a key of every role.
type scopeRig struct {
	*connectHarness
	in, out, missing string
	keys             map[string]string // role -> secret
	tokenValues      []string
}

const scopePattern = "team-a-*"

func newScopeRig(t *testing.T) *scopeRig {
	ch := newConnectHarness(t)
	r := &scopeRig{connectHarness: ch, in: "team-a-1", out: "team-b-1", missing: "team-a-missing", keys: map[string]string{}}
	r.ensure(r.in)
	r.ensure(r.out)
	r.keys[ScopeAdmin] = ch.adminKey
	for _, role := range []string{ScopeTokens, ScopeProxy, ScopeConnect} {
		r.keys[role] = ch.newScopedKey(KeySpec{Name: "scoped " + role, Role: role, Connections: []string{scopePattern}})
	}
	return r
}

// ensure (re)creates connection id when a request deleted it.
func (r *scopeRig) ensure(id string) {
	if _, err := r.store.GetConnection(r.t.Context(), id); err == nil {
		return
	}
	access, refresh := r.importConn(id, provAcme, nil)
	r.tokenValues = append(r.tokenValues, access, refresh)
}

// bodyFor is a plausible body for routes that read one.
func (r *scopeRig) bodyFor(pattern, id string) any {
	switch pattern {
	case "POST /v1/connect-sessions":
		return map[string]any{"connection_id": id, "provider": provAcme}
	case "POST /v1/connections/{id}/token":
		return map[string]any{"stale_token": "fake-not-a-token"}
	case "POST /v1/connections", "PUT /v1/connections/{id}":
		return map[string]any{"id": id, "provider": provAcme, "access_token": "fake-not-a-token"}
	case "POST /v1/connections:batch":
		return map[string]any{"connections": []any{map[string]any{"id": id, "provider": provAcme, "access_token": "fake-not-a-token"}}}
	}
	return nil
}

// softErrCode is the error code and message of an answer, or "" when it
// is not an error body.
func softErrCode(r response) (code, message string) {
	var v struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(r.body, &v) != nil {
		return "", ""
	}
	return v.Error.Code, v.Error.Message
}

// scopedRoute reports whether a route names a connection, in its path or
// (connect sessions) in its body.
func scopedRoute(rt route) bool {
	return strings.Contains(rt.pattern, "{id}") || rt.pattern == "POST /v1/connect-sessions"
}

// TestRouteRoleScopeMatrix walks every keyed route of the route table with
// a key of every role, on a connection inside and one outside the key's
// patterns. A role the route does not admit gets 403; an admitted key on a
// connection outside its scope gets exactly what a missing connection gets;
// inside its scope it is let through. New routes are covered as they are
// added to the table.
func TestRouteRoleScopeMatrix(t *testing.T) {
	r := newScopeRig(t)
	walked := 0
	for _, rt := range routes() {
		if rt.access == accessPublic || rt.access == accessSession {
			continue
		}
		for _, role := range Roles {
			allowed := rt.access&roleAccess(role) != 0
			for _, inScope := range []bool{true, false} {
				if role == ScopeAdmin && !inScope {
					continue // admin keys cannot be scoped
				}
				id := r.in
				if !inScope {
					id = r.out
				}
				methods, path := concrete(rt.pattern, id)
				for _, method := range methods {
					walked++
					what := method + " " + path + " as " + role
					resp := r.do(method, path, r.keys[role], r.bodyFor(rt.pattern, id), nil)
					switch {
					case !allowed:
						if code, _ := resp.errCode(t); resp.status != http.StatusForbidden || code != codeForbidden {
							t.Errorf("%s: status %d code %q, want 403 forbidden", what, resp.status, code)
						}
					case !inScope && scopedRoute(rt):
						_, missingPath := concrete(rt.pattern, r.missing)
						missing := r.do(method, missingPath, r.keys[ScopeAdmin], r.bodyFor(rt.pattern, r.missing), nil)
						if rt.pattern == "POST /v1/connect-sessions" {
							// Creating for a missing id succeeds; out of
							// scope it is the plain not_found of the API.
							missing = response{status: http.StatusNotFound, body: []byte(`{"error":{"code":"not_found","message":"connection not found"}}`)}
						}
						code, msg := resp.errCode(t)
						wantCode, wantMsg := missing.errCode(t)
						if resp.status != http.StatusNotFound || code != codeNotFound || resp.status != missing.status || code != wantCode || msg != wantMsg {
							t.Errorf("%s out of scope: %d %q %q; a missing connection gets %d %q %q", what, resp.status, code, msg, missing.status, wantCode, wantMsg)
						}
					default:
						if resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden {
							t.Errorf("%s in scope: status %d, want it let through", what, resp.status)
						}
						if code, msg := softErrCode(resp); scopedRoute(rt) && code == codeNotFound && msg == "connection not found" {
							t.Errorf("%s in scope: answered as missing", what)
						}
					}
					r.ensure(r.in)
					r.ensure(r.out)
				}
			}
		}
	}
	if walked < len(routes())*2 {
		t.Fatalf("walked only %d requests", walked)
	}
}

// TestProxyKeyNeverSeesToken: a proxy key, on every route and method,
// never receives a raw token, yet its proxied calls go through.
func TestProxyKeyNeverSeesToken(t *testing.T) {
	r := newScopeRig(t)
	key := r.keys[ScopeProxy]
	for _, rt := range routes() {
		for _, id := range []string{r.in, r.out} {
			methods, path := concrete(rt.pattern, id)
			for _, method := range methods {
				for _, p := range []string{path, path + "?include=token", path + "?format=raw"} {
					resp := r.do(method, p, key, r.bodyFor(rt.pattern, id), nil)
					if rt.pattern == patternToken && resp.status != http.StatusForbidden {
						t.Errorf("%s %s with a proxy key: status %d, want 403", method, p, resp.status)
					}
					var all bytes.Buffer
					all.Write(resp.body)
					for k, v := range resp.header {
						all.WriteString(k + ": " + strings.Join(v, ",") + "\n")
					}
					for _, tok := range r.tokenValues {
						if bytes.Contains(all.Bytes(), []byte(tok)) {
							t.Fatalf("%s %s with a proxy key: the response carries a raw token", method, p)
						}
					}
					r.ensure(r.in)
					r.ensure(r.out)
				}
			}
		}
	}
	resp := r.do("POST", "/v1/proxy/"+r.in+"/things", key, "hello", nil)
	if resp.status != http.StatusOK || string(resp.body) != "hello" {
		t.Errorf("proxy with a proxy key: status %d body %q, want 200 echo", resp.status, resp.body)
	}
	calls := r.upstream.calls()
	if last := calls[len(calls)-1]; !strings.HasPrefix(last.Header.Get("Authorization"), "Bearer ") {
		t.Errorf("the provider got no token: %q", last.Header.Get("Authorization"))
	}
}

// TestScopedByProvider: a key limited to a provider gets 404 for another
// provider's connection with an id inside its patterns.
func TestScopedByProvider(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("p-acme", provAcme, nil)
	h.importConn("p-other", provNoDflt, nil)
	key := h.newScopedKey(KeySpec{Name: "acme only", Role: ScopeTokens, Providers: []string{provAcme}})
	if resp := h.do("GET", "/v1/connections/p-acme/token", key, nil, nil); resp.status != http.StatusOK {
		t.Errorf("in-scope provider: status %d, want 200", resp.status)
	}
	resp := h.do("GET", "/v1/connections/p-other/token", key, nil, nil)
	if code, _ := resp.errCode(t); resp.status != http.StatusNotFound || code != codeNotFound {
		t.Errorf("other provider: status %d code %q, want 404 not_found", resp.status, code)
	}
}
