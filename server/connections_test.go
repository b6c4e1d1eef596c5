package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

func decodeView(t *testing.T, r response) connectionView {
	t.Helper()
	var v connectionView
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("status view is not JSON (status %d)", r.status)
	}
	return v
}

func TestImportAndGet(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	access, refresh := h.issue()
	expiresAt := h.clock.Now().Add(90 * time.Minute).UTC()
	refreshExp := h.clock.Now().Add(30 * 24 * time.Hour).UTC()
	resp := h.do("POST", "/v1/connections", h.adminKey, map[string]any{
		"id":                       "user-1@acme",
		"provider":                 provAcme,
		"access_token":             access,
		"refresh_token":            refresh,
		"expires_at":               expiresAt.Format(time.RFC3339),
		"refresh_token_expires_at": refreshExp.Format(time.RFC3339),
		"token_type":               "Bearer",
		"scope":                    "read",
		"metadata":                 map[string]any{"team": "billing", "n": 3},
	}, nil)
	if resp.status != http.StatusCreated {
		t.Fatalf("import: status %d: %s", resp.status, resp.body)
	}
	if containsAny(resp.body, access, refresh) {
		t.Errorf("import answer contains a token")
	}
	if loc := resp.header.Get("Location"); loc != "/v1/connections/user-1@acme" {
		t.Errorf("Location = %q", loc)
	}
	v := decodeView(t, resp)
	switch {
	case v.ID != "user-1@acme", v.Provider != provAcme, v.Status != store.StatusActive,
		v.TokenType != "Bearer", v.Scope != "read", v.ExpirySource != expiryProvider,
		!v.HasRefreshToken, v.Version != 1, v.Failure != nil, v.LastRefreshAt != nil,
		v.CreatedAt == nil, v.UpdatedAt == nil:
		t.Errorf("view = %+v", v)
	}
	if v.ExpiresAt == nil || !v.ExpiresAt.Equal(expiresAt) {
		t.Errorf("expires_at = %v, want %v", v.ExpiresAt, expiresAt)
	}
	if v.RefreshTokenExpiresAt == nil || !v.RefreshTokenExpiresAt.Equal(refreshExp) {
		t.Errorf("refresh_token_expires_at = %v, want %v", v.RefreshTokenExpiresAt, refreshExp)
	}
	var meta map[string]any
	if err := json.Unmarshal(v.Metadata, &meta); err != nil || meta["team"] != "billing" || meta["n"] != 3.0 {
		t.Errorf("metadata = %s", v.Metadata)
	}

	for _, key := range []string{h.adminKey, h.tokensKey} {
		got := h.do("GET", "/v1/connections/user-1@acme", key, nil, nil)
		if got.status != http.StatusOK {
			t.Fatalf("get: status %d", got.status)
		}
		if containsAny(got.body, access, refresh) {
			t.Errorf("status view contains a token")
		}
		if got.header.Get("Cache-Control") != "no-store" {
			t.Errorf("status view Cache-Control = %q", got.header.Get("Cache-Control"))
		}
		gv := decodeView(t, got)
		if gv.ID != v.ID || gv.Version != v.Version || !gv.ExpiresAt.Equal(*v.ExpiresAt) {
			t.Errorf("get view differs from import view: %+v", gv)
		}
		// Every documented field is present, zero times as null.
		var raw map[string]json.RawMessage
		_ = json.Unmarshal(got.body, &raw)
		for _, f := range []string{"id", "provider", "status", "token_type", "scope", "expires_at", "expiry_source",
			"has_refresh_token", "refresh_token_expires_at", "last_refresh_at", "failure", "metadata", "version",
			"created_at", "updated_at"} {
			if _, ok := raw[f]; !ok {
				t.Errorf("status view lacks %q", f)
			}
		}
		if string(raw["last_refresh_at"]) != "null" || string(raw["failure"]) != "null" {
			t.Errorf("last_refresh_at = %s, failure = %s; want null", raw["last_refresh_at"], raw["failure"])
		}
	}

	if r := h.do("GET", "/v1/connections/nobody", h.adminKey, nil, nil); r.status != http.StatusNotFound {
		t.Errorf("unknown id: status %d, want 404", r.status)
	} else if code, _ := r.errCode(t); code != codeNotFound {
		t.Errorf("unknown id: code %q", code)
	}
}

func TestImportExpirySources(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	now := h.clock.Now()
	cases := []struct {
		id, prov   string
		expiresIn  any
		wantSource string
		wantAt     time.Time
	}{
		{"given", provAcme, 120, expiryProvider, now.Add(2 * time.Minute)},
		{"fractional", provAcme, 1.5, expiryProvider, now.Add(1500 * time.Millisecond)},
		{"defaulted", provAcme, nil, expiryDefault, now.Add(time.Hour)},
		{"unknown", provNoDflt, nil, expiryUnknown, time.Time{}},
	}
	for _, c := range cases {
		access, _ := h.issue()
		body := map[string]any{"id": c.id, "provider": c.prov, "access_token": access}
		if c.expiresIn != nil {
			body["expires_in"] = c.expiresIn
		}
		resp := h.do("POST", "/v1/connections", h.adminKey, body, nil)
		if resp.status != http.StatusCreated {
			t.Fatalf("%s: status %d: %s", c.id, resp.status, resp.body)
		}
		v := decodeView(t, resp)
		if v.ExpirySource != c.wantSource {
			t.Errorf("%s: expiry_source %q, want %q", c.id, v.ExpirySource, c.wantSource)
		}
		if c.wantAt.IsZero() != (v.ExpiresAt == nil) || (v.ExpiresAt != nil && !v.ExpiresAt.Equal(c.wantAt)) {
			t.Errorf("%s: expires_at %v, want %v", c.id, v.ExpiresAt, c.wantAt)
		}
		if v.HasRefreshToken {
			t.Errorf("%s: has_refresh_token without one", c.id)
		}
	}

	// A token of unknown expiry: expires_at null, expires_in left out.
	tok := h.do("GET", "/v1/connections/unknown/token", h.tokensKey, nil, nil)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(tok.body, &raw); err != nil || tok.status != http.StatusOK {
		t.Fatalf("token: status %d", tok.status)
	}
	if string(raw["expires_at"]) != "null" {
		t.Errorf("expires_at = %s, want null", raw["expires_at"])
	}
	if _, ok := raw["expires_in"]; ok {
		t.Errorf("expires_in present for an unknown expiry")
	}
}

func TestImportErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{server: func(o *Options) { o.MaxBodyBytes = 4096 }})
	h.importConn("taken", provAcme, nil)
	valid := func(extra string) string {
		return `{"id":"c-` + strconv.Itoa(len(extra)) + `","provider":"acme","access_token":"fake-access-token"` + extra + `}`
	}
	cases := []struct {
		name   string
		body   string
		status int
		code   string
		want   string // in the message
	}{
		{"unknown field", valid(`,"acces_token":"x"`), 400, codeInvalidRequest, `"acces_token"`},
		{"expires_in string", valid(`,"expires_in":"3600"`), 400, codeInvalidRequest, "expires_in"},
		{"expires_in zero", valid(`,"expires_in":0`), 400, codeInvalidRequest, "expires_in"},
		{"expires_in negative", valid(`,"expires_in":-5`), 400, codeInvalidRequest, "expires_in"},
		{"expires_in huge", valid(`,"expires_in":1e300`), 400, codeInvalidRequest, "expires_in"},
		{"expires_at malformed", valid(`,"expires_at":"tomorrow"`), 400, codeInvalidRequest, "expires_at"},
		{"expires_at number", valid(`,"expires_at":1700000000`), 400, codeInvalidRequest, "expires_at"},
		{"both expiries", valid(`,"expires_in":60,"expires_at":"2030-01-01T00:00:00Z"`), 400, codeInvalidRequest, "expires_at"},
		{"refresh expiry malformed", valid(`,"refresh_token_expires_at":"2030-13-01"`), 400, codeInvalidRequest, "refresh_token_expires_at"},
		{"id number", `{"id":7,"provider":"acme","access_token":"fake"}`, 400, codeInvalidRequest, "id"},
		{"scope array", valid(`,"scope":["a"]`), 400, codeInvalidRequest, "scope"},
		{"missing id", `{"provider":"acme","access_token":"fake"}`, 400, codeInvalidRequest, "id"},
		{"bad id", `{"id":"../x","provider":"acme","access_token":"fake"}`, 400, codeInvalidRequest, "id"},
		{"missing provider", `{"id":"c1","access_token":"fake"}`, 400, codeInvalidRequest, "provider"},
		{"unknown provider", `{"id":"c1","provider":"nope","access_token":"fake"}`, 400, codeInvalidRequest, "provider"},
		{"missing access token", `{"id":"c1","provider":"acme"}`, 400, codeInvalidRequest, "access_token"},
		{"empty body", ``, 400, codeInvalidRequest, "empty"},
		{"not an object", `["x"]`, 400, codeInvalidRequest, "object"},
		{"null", `null`, 400, codeInvalidRequest, "object"},
		{"string", `"x"`, 400, codeInvalidRequest, "object"},
		{"bad json", `{"id":`, 400, codeInvalidRequest, "JSON"},
		{"syntax", `{"id" "x"}`, 400, codeInvalidRequest, "JSON"},
		{"two objects", valid(``) + valid(``), 400, codeInvalidRequest, "single"},
		{"too large", valid(`,"metadata":"` + strings.Repeat("m", 5000) + `"`), 413, codeInvalidRequest, "4096"},
		{"taken", `{"id":"taken","provider":"acme","access_token":"fake"}`, 409, codeAlreadyExists, "exists"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := h.do("POST", "/v1/connections", h.adminKey, c.body, nil)
			if resp.status != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.status, c.status, resp.body)
			}
			code, msg := resp.errCode(t)
			if code != c.code || !strings.Contains(msg, c.want) {
				t.Errorf("error %q %q, want code %q and a message naming %q", code, msg, c.code, c.want)
			}
			if strings.Contains(msg, "fake-access-token") {
				t.Errorf("message echoes the token")
			}
		})
	}
	// Nothing but "taken" was stored.
	if r := h.do("GET", "/v1/connections", h.adminKey, nil, nil); !strings.Contains(string(r.body), `"taken"`) ||
		strings.Count(string(r.body), `"id"`) != 1 {
		t.Errorf("list after failed imports: %s", r.body)
	}
}

func TestList(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, id := range []string{"a1", "a2", "a3"} {
		h.importConn(id, provAcme, nil)
	}
	h.importConn("f1", provFlaky, nil)

	type listResp struct {
		Connections []connectionView `json:"connections"`
		NextAfter   string           `json:"next_after"`
	}
	list := func(query string) (listResp, response) {
		r := h.do("GET", "/v1/connections"+query, h.adminKey, nil, nil)
		var l listResp
		if r.status == http.StatusOK {
			if err := json.Unmarshal(r.body, &l); err != nil {
				t.Fatalf("list %s: not JSON", query)
			}
		}
		return l, r
	}
	ids := func(l listResp) string {
		var s []string
		for _, c := range l.Connections {
			s = append(s, c.ID)
		}
		return strings.Join(s, ",")
	}

	if l, _ := list(""); ids(l) != "a1,a2,a3,f1" || l.NextAfter != "" {
		t.Errorf("all: %s next %q", ids(l), l.NextAfter)
	}
	if l, _ := list("?provider=flaky"); ids(l) != "f1" {
		t.Errorf("provider=flaky: %s", ids(l))
	}
	if l, _ := list("?status=needs_reauth"); ids(l) != "" {
		t.Errorf("status=needs_reauth: %s", ids(l))
	}
	l, _ := list("?limit=2")
	if ids(l) != "a1,a2" || l.NextAfter != "a2" {
		t.Errorf("page 1: %s next %q", ids(l), l.NextAfter)
	}
	l, _ = list("?limit=2&after=" + l.NextAfter)
	if ids(l) != "a3,f1" {
		t.Errorf("page 2: %s next %q", ids(l), l.NextAfter)
	}
	if _, r := list("?provider=none"); !strings.Contains(string(r.body), `"connections":[]`) {
		t.Errorf("empty list body %s, want an empty array", r.body)
	}

	for _, q := range []struct{ query, want string }{
		{"?limit=0", "limit"}, {"?limit=-1", "limit"}, {"?limit=x", "limit"}, {"?limit=501", "limit"},
		{"?status=zombie", "status"}, {"?bogus=1", "bogus"}, {"?limit=1&limit=2", "limit"}, {"?a=%zz", "query"},
	} {
		_, r := list(q.query)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", q.query, r.status)
			continue
		}
		if code, msg := r.errCode(t); code != codeInvalidRequest || !strings.Contains(msg, q.want) {
			t.Errorf("%s: %q %q, want a message naming %q", q.query, code, msg, q.want)
		}
	}
}

func TestToken(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	access, _ := h.importConn("c1", provAcme, nil) // expires_in 3600
	h.clock.Advance(100 * time.Second)
	for _, key := range []string{h.adminKey, h.tokensKey} {
		r := h.do("GET", "/v1/connections/c1/token", key, nil, nil)
		if r.status != http.StatusOK {
			t.Fatalf("token: status %d", r.status)
		}
		if r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
		}
		var tv struct {
			AccessToken string    `json:"access_token"`
			TokenType   string    `json:"token_type"`
			ExpiresAt   time.Time `json:"expires_at"`
			ExpiresIn   *float64  `json:"expires_in"`
		}
		if err := json.Unmarshal(r.body, &tv); err != nil {
			t.Fatal("token answer is not JSON")
		}
		if tv.AccessToken != access {
			t.Errorf("token is not the imported access token (length %d vs %d)", len(tv.AccessToken), len(access))
		}
		if tv.TokenType != "Bearer" || tv.ExpiresIn == nil || *tv.ExpiresIn != 3500 {
			t.Errorf("token_type %q expires_in %v, want Bearer and 3500", tv.TokenType, tv.ExpiresIn)
		}
		if want := h.clock.Now().Add(3500 * time.Second); !tv.ExpiresAt.Equal(want) {
			t.Errorf("expires_at %v, want %v", tv.ExpiresAt, want)
		}
	}
	if n := h.authz.RefreshCalls(); n != 0 {
		t.Errorf("a valid token caused %d refreshes", n)
	}
	if r := h.do("GET", "/v1/connections/nope/token", h.tokensKey, nil, nil); r.status != http.StatusNotFound {
		t.Errorf("unknown connection: status %d, want 404", r.status)
	}
}

func tokenOf(t *testing.T, r response) string {
	t.Helper()
	var tv struct {
		AccessToken string `json:"access_token"`
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &tv) != nil || tv.AccessToken == "" {
		t.Fatalf("token answer: status %d", r.status)
	}
	return tv.AccessToken
}

func TestTokenRefreshesNearExpiry(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	access, _ := h.importConn("c1", provAcme, nil)
	h.clock.Advance(3500 * time.Second) // inside the 5-minute refresh window
	got := tokenOf(t, h.do("GET", "/v1/connections/c1/token", h.tokensKey, nil, nil))
	if got == access {
		t.Errorf("token inside the refresh window was handed out unrefreshed")
	}
	if n := h.authz.RefreshCalls(); n != 1 {
		t.Errorf("refresh calls = %d, want 1", n)
	}
	if !h.authz.Active(t, got) {
		t.Errorf("refreshed token is not active at the provider")
	}
	v := decodeView(t, h.do("GET", "/v1/connections/c1", h.adminKey, nil, nil))
	if v.LastRefreshAt == nil || v.Version < 2 {
		t.Errorf("after refresh: last_refresh_at %v version %d", v.LastRefreshAt, v.Version)
	}
}

func TestForceRefresh(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	access, _ := h.importConn("c1", provAcme, nil)
	r := h.do("POST", "/v1/connections/c1/refresh", h.adminKey, nil, nil)
	if r.status != http.StatusOK {
		t.Fatalf("refresh: status %d: %s", r.status, r.body)
	}
	v := decodeView(t, r)
	if v.LastRefreshAt == nil || v.Version < 2 {
		t.Errorf("refresh answer: last_refresh_at %v version %d", v.LastRefreshAt, v.Version)
	}
	if n := h.authz.RefreshCalls(); n != 1 {
		t.Errorf("refresh calls = %d, want 1", n)
	}
	if got := tokenOf(t, h.do("GET", "/v1/connections/c1/token", h.adminKey, nil, nil)); got == access {
		t.Errorf("token unchanged after a forced refresh")
	}
	if r := h.do("POST", "/v1/connections/nope/refresh", h.adminKey, nil, nil); r.status != http.StatusNotFound {
		t.Errorf("unknown connection: status %d, want 404", r.status)
	}
}

const providerText = "grant revoked by admin-note-7f3a"

func TestReauthRequired(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("c1", provAcme, nil)
	h.authz.FailNext(1, http.StatusBadRequest, http.Header{"Content-Type": {"application/json"}},
		`{"error":"invalid_grant","error_description":"`+providerText+`"}`)
	h.clock.Advance(3500 * time.Second)

	r := h.do("GET", "/v1/connections/c1/token", h.tokensKey, nil, nil)
	if r.status != http.StatusConflict {
		t.Fatalf("token after invalid_grant: status %d, want 409", r.status)
	}
	code, msg := r.errCode(t)
	if code != codeReauthRequired || !strings.Contains(msg, "invalid_grant") {
		t.Errorf("tokens scope: %q %q", code, msg)
	}
	if strings.Contains(string(r.body), providerText) {
		t.Errorf("tokens scope sees the provider's description")
	}

	// Now needs_reauth: admins see the provider's text, tokens keys do not.
	r = h.do("GET", "/v1/connections/c1/token", h.adminKey, nil, nil)
	if code, msg := r.errCode(t); r.status != http.StatusConflict || code != codeReauthRequired || !strings.Contains(msg, providerText) {
		t.Errorf("admin: status %d %q %q, want 409 with the provider's description", r.status, code, msg)
	}
	tv := decodeView(t, h.do("GET", "/v1/connections/c1", h.tokensKey, nil, nil))
	if tv.Status != store.StatusNeedsReauth || tv.Failure == nil || tv.Failure.Code != "invalid_grant" || tv.Failure.Message != "" {
		t.Errorf("tokens view: status %q failure %+v", tv.Status, tv.Failure)
	}
	av := decodeView(t, h.do("GET", "/v1/connections/c1", h.adminKey, nil, nil))
	if av.Failure == nil || av.Failure.Message != providerText || av.Failure.Attempts != 1 {
		t.Errorf("admin view failure %+v", av.Failure)
	}
	if r := h.do("POST", "/v1/connections/c1/refresh", h.adminKey, nil, nil); r.status != http.StatusConflict {
		t.Errorf("forced refresh of a dead connection: status %d, want 409", r.status)
	}
	if n := h.authz.RefreshCalls(); n != 1 {
		t.Errorf("provider called %d times for a dead connection, want 1", n)
	}
}

func TestProviderUnavailable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("c1", provAcme, nil)
	h.authz.FailNext(1, http.StatusServiceUnavailable, http.Header{"Retry-After": {"30"}, "Content-Type": {"text/html"}},
		"<html>"+providerText+"</html>")
	h.clock.Advance(3600 * time.Second) // expired: nothing to serve meanwhile

	r := h.do("GET", "/v1/connections/c1/token", h.tokensKey, nil, nil)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", r.status, r.body)
	}
	if code, _ := r.errCode(t); code != codeProviderUnavailable {
		t.Errorf("code %q", code)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 30 {
		t.Errorf("Retry-After %q, want at least 30", r.header.Get("Retry-After"))
	}
	if strings.Contains(string(r.body), providerText) {
		t.Errorf("tokens scope sees the provider's text")
	}
	// During the cooldown the provider is not called again.
	r = h.do("GET", "/v1/connections/c1/token", h.tokensKey, nil, nil)
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); r.status != http.StatusServiceUnavailable || err != nil || ra < 1 {
		t.Errorf("in cooldown: status %d Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	if n := h.authz.RefreshCalls(); n != 1 {
		t.Errorf("refresh calls = %d, want 1", n)
	}
}

func TestDelete(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	access, refresh := h.importConn("rev", provAcme, nil)
	h.importConn("flaky", provFlaky, nil)
	h.importConn("plain", provNoDflt, nil)

	cases := []struct {
		id          string
		revoked     bool
		revokeError bool
	}{
		{"rev", true, false},
		{"flaky", false, true},
		{"plain", false, false},
	}
	for _, c := range cases {
		r := h.do("DELETE", "/v1/connections/"+c.id, h.adminKey, nil, nil)
		if r.status != http.StatusOK {
			t.Fatalf("%s: status %d", c.id, r.status)
		}
		var dv map[string]any
		_ = json.Unmarshal(r.body, &dv)
		re, hasErr := dv["revocation_error"].(string)
		if dv["deleted"] != true || dv["revoked"] != c.revoked || hasErr != c.revokeError || (hasErr && re == "") {
			t.Errorf("%s: %s", c.id, r.body)
		}
		if g := h.do("GET", "/v1/connections/"+c.id, h.adminKey, nil, nil); g.status != http.StatusNotFound {
			t.Errorf("%s after delete: status %d, want 404", c.id, g.status)
		}
	}
	if h.authz.Active(t, access) || h.authz.Active(t, refresh) {
		t.Errorf("tokens still active at the provider after a revoking delete")
	}
	if r := h.do("DELETE", "/v1/connections/rev", h.adminKey, nil, nil); r.status != http.StatusNotFound {
		t.Errorf("second delete: status %d, want 404", r.status)
	}
}

func TestDatabaseUnavailable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("c1", provAcme, nil) // caches the admin key
	if r := h.do("GET", "/readyz", "", nil, nil); r.status != http.StatusOK {
		t.Fatalf("readyz: %d", r.status)
	}
	h.store.Close()

	r := h.do("GET", "/v1/connections/c1", h.adminKey, nil, nil)
	if code, msg := r.errCode(t); r.status != http.StatusServiceUnavailable || code != codeProviderUnavailable || msg != "database unavailable" {
		t.Errorf("cached key, closed store: status %d %q %q", r.status, code, msg)
	}
	if r.header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After")
	}
	// A key that must be looked up: the database being down is not a bad key.
	r = h.do("GET", "/v1/connections/c1", h.tokensKey, nil, nil)
	if r.status != http.StatusServiceUnavailable {
		t.Errorf("uncached key, closed store: status %d, want 503", r.status)
	}
	if r := h.do("GET", "/readyz", "", nil, nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("readyz with a closed store: %d, want 503", r.status)
	}
	if r := h.do("GET", "/healthz", "", nil, nil); r.status != http.StatusOK {
		t.Errorf("healthz: %d, want 200", r.status)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	r := h.do("PUT", "/v1/connections", h.adminKey, nil, nil)
	if code, _ := r.errCode(t); r.status != http.StatusMethodNotAllowed || code != codeMethodNotAllowed {
		t.Errorf("PUT /v1/connections: %d %q", r.status, code)
	}
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Errorf("Allow = %q", allow)
	}
	r = h.do("GET", "/v2/nothing", h.adminKey, nil, nil)
	if code, _ := r.errCode(t); r.status != http.StatusNotFound || code != codeNotFound {
		t.Errorf("unknown route: %d %q", r.status, code)
	}
}

// panicBroker panics in GetConnection with a value holding a fake secret.
type panicBroker struct{ Broker }

const panicSecret = "tbk_fake-secret-in-a-panic-value"

func (panicBroker) GetConnection(context.Context, string) (store.Connection, error) {
	panic(fmt.Errorf("boom with %s", panicSecret))
}

func TestPanicBecomes500(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	srv, err := New(Options{Broker: panicBroker{h.broker}, Keys: h.store, Logger: h.server.log})
	if err != nil {
		t.Fatal(err)
	}
	h.server = srv
	rec := h.serveRaw("GET", "/v1/connections/c1?q="+panicSecret, h.adminKey)
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", rec.Code)
	}
	var e errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != codeInternal || e.Error.Message != msgInternal {
		t.Errorf("body %s", rec.Body.Bytes())
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "panic serving request") {
		t.Errorf("the panic was not logged")
	}
	if strings.Contains(logs, panicSecret) || strings.Contains(rec.Body.String(), "boom") {
		t.Errorf("the panic value leaked into the log or the answer")
	}
	// The server goes on serving.
	if rec := h.serveRaw("GET", "/healthz", ""); rec.Code != http.StatusOK {
		t.Errorf("after a panic: healthz %d", rec.Code)
	}
}

func TestRequestLogLine(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("c1", provAcme, nil)
	const querySecret = "query-secret-5d1e"
	h.do("GET", "/v1/connections/c1/token?x="+querySecret, h.tokensKey, nil, nil)
	h.do("GET", "/v1/connections/nope/token", h.tokensKey, nil, nil)

	var found, foundErr bool
	if strings.Contains(h.logs.String(), querySecret) {
		t.Errorf("the query string was logged")
	}
	for _, rec := range h.requestLogs() {
		if rec["route"] == "GET /v1/connections/{id}/token" && rec["status"] == 200.0 {
			found = rec["connection"] == "c1" && rec["method"] == "GET" && rec["duration"] != nil && rec["key"] != nil
		}
		if rec["route"] == "GET /v1/connections/{id}/token" && rec["status"] == 404.0 {
			foundErr = rec["error"] == codeNotFound
		}
	}
	if !found || !foundErr {
		t.Errorf("request log lines missing or incomplete (found %v, foundErr %v)", found, foundErr)
	}
}

// A connection imported by API is repaired by re-importing fresh tokens:
// PUT replaces them, the connection is active again and its failure gone.
func TestReimportRepairsNeedsReauth(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("c1", provAcme, map[string]any{"metadata": map[string]any{"team": "blue"}})
	h.authz.FailNext(1, http.StatusBadRequest, http.Header{"Content-Type": {"application/json"}}, `{"error":"invalid_grant"}`)
	h.clock.Advance(3500 * time.Second)
	if r := h.do("GET", "/v1/connections/c1/token", h.tokensKey, nil, nil); r.status != http.StatusConflict {
		t.Fatalf("token after invalid_grant: status %d, want 409", r.status)
	}

	h.clock.Advance(time.Minute) // the repair comes later than the failure
	access, refresh := h.issue()
	body := map[string]any{"provider": provAcme, "access_token": access, "refresh_token": refresh, "expires_in": 3600}
	if r := h.do("PUT", "/v1/connections/c1", h.tokensKey, body, nil); r.status != http.StatusForbidden {
		t.Fatalf("PUT with a tokens key: status %d, want 403", r.status)
	}
	r := h.do("PUT", "/v1/connections/c1", h.adminKey, body, nil)
	if r.status != http.StatusOK {
		t.Fatalf("PUT over needs_reauth: status %d, body %s", r.status, r.body)
	}
	view := r.json(t)
	if view["status"] != "active" || view["failure"] != nil {
		t.Fatalf("after re-import: status %v, failure %v; want active and none", view["status"], view["failure"])
	}
	if md, _ := view["metadata"].(map[string]any); md["team"] != "blue" {
		t.Errorf("re-import without metadata lost the stored metadata: %v", view["metadata"])
	}
	tok := h.do("GET", "/v1/connections/c1/token", h.tokensKey, nil, nil)
	if tok.status != http.StatusOK || tok.json(t)["access_token"] != access {
		t.Fatalf("token after re-import: status %d", tok.status)
	}
	events, err := h.store.ConnectionEvents(t.Context(), "c1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 || events[0].Type != "connection.recovered" {
		t.Fatalf("newest event after re-import: %v, want connection.recovered", events)
	}

	// A new id is created; a body id that disagrees with the path is refused.
	a2, r2 := h.issue()
	if r := h.do("PUT", "/v1/connections/c2", h.adminKey, map[string]any{"provider": provAcme, "access_token": a2, "refresh_token": r2}, nil); r.status != http.StatusCreated {
		t.Fatalf("PUT of a new id: status %d, want 201", r.status)
	}
	if r := h.do("PUT", "/v1/connections/c2", h.adminKey, map[string]any{"id": "c3", "provider": provAcme, "access_token": a2}, nil); r.status != http.StatusBadRequest {
		t.Fatalf("PUT with a mismatched body id: status %d, want 400", r.status)
	}
	if r := h.do("PUT", "/v1/connections/c2", h.adminKey, map[string]any{"provider": provNoAPI, "access_token": a2}, nil); r.status != http.StatusConflict {
		t.Fatalf("PUT under another provider: status %d, want 409", r.status)
	}
}

func TestRefreshTokenExpiringSoonIsReported(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	soon := h.clock.Now().Add(5 * 24 * time.Hour).UTC().Format(time.RFC3339)
	later := h.clock.Now().Add(90 * 24 * time.Hour).UTC().Format(time.RFC3339)
	h.importConn("soon", provAcme, map[string]any{"refresh_token_expires_at": soon})
	h.importConn("later", provAcme, map[string]any{"refresh_token_expires_at": later})
	for id, want := range map[string]bool{"soon": true, "later": false} {
		v := h.do("GET", "/v1/connections/"+id, h.tokensKey, nil, nil).json(t)
		if v["refresh_token_expiring_soon"] != want {
			t.Errorf("%s: refresh_token_expiring_soon = %v, want %v", id, v["refresh_token_expiring_soon"], want)
		}
	}
}
