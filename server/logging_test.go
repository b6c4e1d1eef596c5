package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLogsCarryNoSecrets runs a connection through its whole life, with
// every component logging to one sink at debug level, and checks that no
// access token, refresh token, API key or client secret appears in any
// record.
func TestLogsCarryNoSecrets(t *testing.T) {
	h := newHarness(t, harnessOptions{})

	// Import.
	access, _ := h.importConn("c1", provAcme, map[string]any{"metadata": map[string]any{"k": "v"}})
	// Token, valid.
	if got := tokenOf(t, h.do("GET", "/v1/connections/c1/token", h.tokensKey, nil, nil)); got != access {
		t.Fatalf("token is not the imported one")
	}
	// Expire -> refresh on the token route.
	h.clock.Advance(3500 * time.Second)
	second := tokenOf(t, h.do("GET", "/v1/connections/c1/token", h.tokensKey, nil, nil))
	if second == access {
		t.Fatalf("token not refreshed")
	}
	// Proxy: 401 for the current token -> refresh -> replay.
	h.upstream.rejectToken(second, http.StatusUnauthorized)
	if r := h.do("POST", "/v1/proxy/c1/x?token=in-query", h.tokensKey, `{"a":1}`, nil); r.status != http.StatusOK {
		t.Fatalf("proxy: status %d", r.status)
	}
	// A failing call, a forbidden one and an unauthenticated one.
	h.do("POST", "/v1/connections", h.tokensKey, `{}`, nil)
	h.do("GET", "/v1/connections/c1", "tbk_not-a-real-key-but-still-secret", nil, nil)
	h.tokens.add("tbk_not-a-real-key-but-still-secret")
	// Forced refresh and delete (revocation).
	if r := h.do("POST", "/v1/connections/c1/refresh", h.adminKey, nil, nil); r.status != http.StatusOK {
		t.Fatalf("refresh: status %d", r.status)
	}
	if r := h.do("DELETE", "/v1/connections/c1", h.adminKey, nil, nil); r.status != http.StatusOK {
		t.Fatalf("delete: status %d", r.status)
	}

	for _, c := range h.upstream.calls() {
		h.tokens.add(strings.TrimPrefix(c.Header.Get("Authorization"), "Bearer "))
	}
	// The recorder saw the imported grant, three refreshes and the keys.
	if n := len(h.tokens.all()); n < 2+3*2+2 {
		t.Errorf("only %d secrets recorded; the cycle did not run as planned", n)
	}

	lines := h.logs.lines()
	requests := 0
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON")
		}
		if rec["msg"] == "request" {
			requests++
		}
		if strings.Contains(line, "in-query") {
			t.Errorf("a proxied query string was logged")
		}
		if strings.Contains(strings.ToLower(line), "authorization") || strings.Contains(line, "Bearer ") {
			t.Errorf("a header was logged: %.80s…", line)
		}
	}
	if requests != 8 {
		t.Errorf("%d request lines logged, want one per request (8)", requests)
	}
	h.assertNoSecretsLogged() // also run at cleanup; here to fail at this point
}
