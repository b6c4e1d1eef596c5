package server

import (
	"net/http"
	"testing"
)

// A tokens key reports the token an API rejected: the first report
// refreshes, a report of the same (now old) token gets the new one without
// another refresh, and a report without a token is refused.
func TestReportStaleToken(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	old, _ := h.importConn("alice", provAcme, nil)

	r := h.do("POST", "/v1/connections/alice/token", h.tokensKey, map[string]any{"stale_token": old}, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.status, r.body)
	}
	fresh, _ := r.json(t)["access_token"].(string)
	if fresh == "" || fresh == old || h.authz.RefreshCalls() != 1 {
		t.Fatalf("got a new token: %v; %d refreshes, want 1", fresh != old, h.authz.RefreshCalls())
	}
	h.tokens.add(fresh)

	r = h.do("POST", "/v1/connections/alice/token", h.tokensKey, map[string]any{"stale_token": old}, nil)
	if got, _ := r.json(t)["access_token"].(string); r.status != http.StatusOK || got != fresh || h.authz.RefreshCalls() != 1 {
		t.Errorf("second report of the old token: status %d, current token %v, %d refreshes; want 200, the current token, 1 refresh",
			r.status, got == fresh, h.authz.RefreshCalls())
	}

	for i, body := range []any{map[string]any{}, map[string]any{"stale_token": ""}, map[string]any{"stale": old}, "not json"} {
		r = h.do("POST", "/v1/connections/alice/token", h.tokensKey, body, nil)
		if code, _ := r.errCode(t); r.status != http.StatusBadRequest || code != "invalid_request" {
			t.Errorf("bad body %d: status %d code %s, want 400 invalid_request", i, r.status, code)
		}
	}
	if r := h.do("POST", "/v1/connections/nobody/token", h.tokensKey, map[string]any{"stale_token": old}, nil); r.status != http.StatusNotFound {
		t.Errorf("unknown connection: status %d, want 404", r.status)
	}
	h.assertNoSecretsLogged()
}
