package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/server/ui"
	"github.com/tokenbroker/tokenbroker/store"
)

func keyWithID(i int) store.APIKey { return store.APIKey{ID: strconv.Itoa(i), Scope: ScopeAdmin} }

// concrete turns a route pattern into a method and a path that match it.
func concrete(pattern, id string) (methods []string, path string) {
	method, path, ok := strings.Cut(pattern, " ")
	if ok {
		methods = []string{method}
	} else {
		path = method
		methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	}
	path = strings.ReplaceAll(path, "{id}", id)
	path = strings.ReplaceAll(path, "{path...}", "some/path")
	return methods, path
}

// TestRouteTable pins who may call what: the documented contract.
func TestRouteTable(t *testing.T) {
	want := map[string]access{
		"POST /v1/connections":              accessAdmin,
		"POST /v1/connections:batch":        accessAdmin,
		"PUT /v1/connections/{id}":          accessAdmin,
		"GET /v1/connections":               accessAdmin,
		"GET /v1/connections/{id}":          accessStatus,
		"GET /v1/connections/{id}/token":    accessTokens,
		"POST /v1/connections/{id}/token":   accessTokens,
		"POST /v1/connections/{id}/refresh": accessAdmin,
		"DELETE /v1/connections/{id}":       accessAdmin,
		"/v1/proxy/{id}/{path...}":          accessStatus,
		"GET /healthz":                      accessPublic,
		"GET /readyz":                       accessPublic,
		"GET /metrics":                      accessAdmin,
		"/ui/":                              accessSession,
		// The connect flow: the link and the callback are opened by a
		// person's browser, with no API key; the session id and the
		// single-use state are the capabilities (connect_test.go).
		"POST /v1/connect-sessions": accessConnect,
		"GET /v1/connect/{session}": accessPublic,
		"GET /v1/connect/callback":  accessPublic,
		"GET /v1/openapi.json":      accessPublic,
		"GET /v1/audit":             accessAdmin,
		"POST /v1/api-keys":         accessAdmin,
		"GET /v1/api-keys":          accessAdmin,
		"DELETE /v1/api-keys/{key}": accessAdmin,
		// Fetched by authorization servers of MCP servers (docs/mcp.md).
		"GET " + ClientMetadataPath: accessPublic,
	}
	got := map[string]access{}
	for _, rt := range routes() {
		if _, dup := got[rt.pattern]; dup {
			t.Errorf("route %q registered twice", rt.pattern)
		}
		got[rt.pattern] = rt.access
	}
	for p, a := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("route %q missing", p)
		} else if g != a {
			t.Errorf("route %q: access %d, want %d", p, g, a)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("route %q is not in the contract table of this test: add it with its access", p)
		}
	}
}

// TestEveryRouteRequiresKey walks every registered route and proves that
// no key, a wrong key, a malformed header and a revoked key are refused
// with 401, that a tokens key gets 403 on admin routes, and that the
// allowed scopes get through. The dashboard's routes (accessSession) take
// no API key but a session cookie: without one a page redirects to the
// sign-in page and anything else is refused with 401, even when the
// request carries a valid admin API key.
func TestEveryRouteRequiresKey(t *testing.T) {
	h := newHarness(t, harnessOptions{noCache: true, server: func(o *Options) {
		dash, err := ui.New(ui.Options{
			Broker:      o.Broker,
			Keys:        o.Keys.(ui.KeyStore),
			SessionKeys: func() [][]byte { return [][]byte{bytes.Repeat([]byte("k"), 32)} },
		})
		if err != nil {
			t.Fatal(err)
		}
		o.UI = dash
	}})
	revoked, revokedKey, err := GenerateAPIKey("revoked", ScopeAdmin, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.CreateAPIKey(t.Context(), revokedKey); err != nil {
		t.Fatal(err)
	}
	if err := h.store.RevokeAPIKey(t.Context(), revokedKey.ID); err != nil {
		t.Fatal(err)
	}
	h.tokens.add(revoked)
	wrong, _, _ := GenerateAPIKey("never stored", ScopeAdmin, h.clock.Now())

	badAuth := []struct {
		name   string
		header []string
	}{
		{"no key", nil},
		{"wrong key", []string{"Bearer " + wrong}},
		{"revoked key", []string{"Bearer " + revoked}},
		{"basic scheme", []string{"Basic " + h.adminKey}},
		{"no scheme", []string{h.adminKey}},
		{"empty bearer", []string{"Bearer "}},
		{"not a tbk key", []string{"Bearer x" + h.adminKey}},
		{"two headers", []string{"Bearer " + h.adminKey, "Bearer " + h.adminKey}},
		{"key with a suffix", []string{"Bearer " + h.adminKey + "x"}},
	}

	walked := 0
	for _, rt := range routes() {
		methods, path := concrete(rt.pattern, "nope")
		for _, method := range methods {
			walked++
			if rt.access == accessSession {
				for _, key := range []string{"", h.adminKey} {
					rec := h.serveRaw(method, path, key)
					switch {
					case method == http.MethodGet:
						if loc := rec.Header().Get("Location"); rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/signin") {
							t.Errorf("%s %s without a session (API key %v): status %d to %q, want 303 to /ui/signin", method, path, key != "", rec.Code, loc)
						}
					case rec.Code != http.StatusUnauthorized:
						t.Errorf("%s %s without a session (API key %v): status %d, want 401", method, path, key != "", rec.Code)
					}
				}
				continue
			}
			if rt.access == accessPublic {
				resp := h.do(method, path, "", nil, nil)
				switch {
				case strings.HasPrefix(path, "/v1/connect/"):
					// The connect routes answer an unknown session or a
					// callback without state on a page, never with 401.
					if resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden || resp.status == http.StatusOK {
						t.Errorf("%s %s without a key or session: status %d, want a 4xx page", method, path, resp.status)
					}
				case path == ClientMetadataPath && resp.status == http.StatusNotFound:
					// Served only with a public_url, which this harness has not.
				case resp.status != http.StatusOK:
					t.Errorf("%s %s without a key: status %d, want 200", method, path, resp.status)
				}
				continue
			}
			for _, ba := range badAuth {
				var hdr http.Header
				if ba.header != nil {
					hdr = http.Header{"Authorization": ba.header}
				}
				resp := h.do(method, path, "", nil, hdr)
				if resp.status != http.StatusUnauthorized {
					t.Errorf("%s %s, %s: status %d, want 401", method, path, ba.name, resp.status)
					continue
				}
				if code, _ := resp.errCode(t); code != codeUnauthenticated {
					t.Errorf("%s %s, %s: code %q, want unauthenticated", method, path, ba.name, code)
				}
				if !strings.HasPrefix(resp.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s %s, %s: WWW-Authenticate %q", method, path, ba.name, resp.header.Get("WWW-Authenticate"))
				}
			}
			resp := h.do(method, path, h.tokensKey, nil, nil)
			switch rt.access {
			case accessAdmin:
				if resp.status != http.StatusForbidden {
					t.Errorf("%s %s with a tokens key: status %d, want 403", method, path, resp.status)
				} else if code, _ := resp.errCode(t); code != codeForbidden {
					t.Errorf("%s %s with a tokens key: code %q, want forbidden", method, path, code)
				}
			case accessTokens:
				if resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden {
					t.Errorf("%s %s with a tokens key: status %d, want it let through", method, path, resp.status)
				}
			}
			if resp := h.do(method, path, h.adminKey, nil, nil); resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden {
				t.Errorf("%s %s with an admin key: status %d, want it let through", method, path, resp.status)
			}
		}
	}
	if walked < len(routes()) {
		t.Fatalf("walked %d method/route pairs for %d routes", walked, len(routes()))
	}
}

func TestGenerateAPIKey(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	seen := map[string]bool{}
	ids := map[string]bool{}
	for _, scope := range []string{ScopeAdmin, ScopeTokens, ScopeAdmin} {
		secret, key, err := GenerateAPIKey("ci", scope, now)
		if err != nil {
			t.Fatalf("scope %s: %v", scope, err)
		}
		raw, ok := strings.CutPrefix(secret, "tbk_")
		if !ok {
			t.Errorf("secret lacks the tbk_ prefix")
		}
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || len(b) != 32 {
			t.Errorf("secret is not base64url of 32 bytes (decoded %d bytes, err %v)", len(b), err)
		}
		sum := sha256.Sum256([]byte(secret))
		if !bytes.Equal(key.Hash, sum[:]) || !bytes.Equal(HashAPIKey(secret), sum[:]) {
			t.Errorf("stored hash is not SHA-256 of the secret")
		}
		if key.Scope != scope || key.Name != "ci" || !key.CreatedAt.Equal(now) || key.ID == "" || !key.RevokedAt.IsZero() {
			t.Errorf("key record = {id %q name %q scope %q created %v}", key.ID, key.Name, key.Scope, key.CreatedAt)
		}
		if seen[secret] || ids[key.ID] {
			t.Errorf("secret or id repeated")
		}
		seen[secret], ids[key.ID] = true, true
	}
	for _, scope := range []string{"", "root", "Admin"} {
		_, _, err := GenerateAPIKey("ci", scope, now)
		if err == nil || !strings.Contains(err.Error(), "scope") || !strings.Contains(err.Error(), `"`+scope+`"`) {
			t.Errorf("scope %q: error %v, want one naming the scope", scope, err)
		}
	}
	if _, _, err := GenerateAPIKey(strings.Repeat("n", 201), ScopeAdmin, now); err == nil || !strings.Contains(err.Error(), "name") {
		t.Errorf("overlong name: error %v, want one naming the name", err)
	}
}

// TestKeyCacheRevocation: a revoked key keeps working from the cache for
// at most the TTL, then is refused.
func TestKeyCacheRevocation(t *testing.T) {
	h := newHarness(t, harnessOptions{server: func(o *Options) { o.KeyCacheTTL = 10 * time.Second }})
	secret, key, err := GenerateAPIKey("soon revoked", ScopeAdmin, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.CreateAPIKey(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	h.tokens.add(secret)
	if r := h.do("GET", "/v1/connections", secret, nil, nil); r.status != http.StatusOK {
		t.Fatalf("fresh key: status %d", r.status)
	}
	if err := h.store.RevokeAPIKey(t.Context(), key.ID); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(9 * time.Second)
	if r := h.do("GET", "/v1/connections", secret, nil, nil); r.status != http.StatusOK {
		t.Errorf("revoked key inside the cache TTL: status %d, want 200 (cached)", r.status)
	}
	h.clock.Advance(2 * time.Second)
	if r := h.do("GET", "/v1/connections", secret, nil, nil); r.status != http.StatusUnauthorized {
		t.Errorf("revoked key after the cache TTL: status %d, want 401", r.status)
	}
}

func TestKeyCacheBounded(t *testing.T) {
	c := newKeyCache(time.Minute, 4, time.Now)
	for i := range 20 {
		h := [32]byte(HashAPIKey(strings.Repeat("k", i+1)))
		c.put(h, keyWithID(i), c.generation())
		if n := len(c.entries); n > 4 {
			t.Fatalf("cache holds %d entries, max 4", n)
		}
		if _, ok := c.get(h); !ok {
			t.Fatalf("entry just put is missing")
		}
	}
}
