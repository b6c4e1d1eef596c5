package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// TestShortLivedTokensThroughTheAPI: tokens that live 60 seconds (shorter
// than the default 5-minute window) are not refreshed per request, through
// the token route and through the proxy: 100 reads of a fresh token cost no
// refresh, 200 concurrent proxied calls on an expired one cost exactly one
// and all carry its token, and 100 more cost none.
func TestShortLivedTokensThroughTheAPI(t *testing.T) {
	h := newHarness(t, harnessOptions{authz: authztest.Options{AccessTokenLifespan: time.Minute}})
	access, refresh := h.issue()
	if r := h.do("POST", "/v1/connections", h.adminKey, map[string]any{
		"id": "c1", "provider": provAcme, "access_token": access, "refresh_token": refresh, "expires_in": 60,
	}, nil); r.status != http.StatusCreated {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	readToken := func(i int) string {
		t.Helper()
		r := h.do("GET", "/v1/connections/c1/token", h.tokensKey, nil, nil)
		var body struct {
			AccessToken string `json:"access_token"`
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &body) != nil {
			t.Fatalf("token read %d: %d", i, r.status)
		}
		return body.AccessToken
	}
	for i := range 100 {
		if readToken(i) != access {
			t.Fatalf("read %d of a fresh token handed out another one", i)
		}
		h.clock.Advance(250 * time.Millisecond)
	}
	if n := h.authz.RefreshCalls(); n != 0 {
		t.Fatalf("%d refreshes over 100 reads of a fresh 60-second token, want 0", n)
	}

	h.clock.Advance(time.Minute) // expired
	const callers = 200
	statuses := make([]int, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", h.api.URL+"/v1/proxy/c1/me", nil)
			req.Header.Set("Authorization", "Bearer "+h.tokensKey)
			resp, err := h.api.Client().Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("proxied call %d: status %d", i, s)
		}
	}
	if n := h.authz.RefreshCalls(); n != 1 {
		t.Fatalf("%d refreshes for %d concurrent proxied calls on an expired token, want 1", n, callers)
	}
	seen := map[string]bool{}
	for _, c := range h.upstream.calls() {
		seen[strings.TrimPrefix(c.Header.Get("Authorization"), "Bearer ")] = true
	}
	if len(seen) != 1 || seen[access] {
		t.Fatalf("the upstream saw %d distinct tokens (the expired one: %v), want the one new token", len(seen), seen[access])
	}
	for i := range 100 {
		if r := h.do("GET", "/v1/proxy/c1/me", h.tokensKey, nil, nil); r.status != http.StatusOK {
			t.Fatalf("proxied call %d after the refresh: %d", i, r.status)
		}
		readToken(i)
		h.clock.Advance(250 * time.Millisecond)
	}
	if n := h.authz.RefreshCalls(); n != 1 {
		t.Fatalf("%d refreshes after 100 more reads, want still 1", n)
	}
	if n := h.authz.ReuseDetected(); n != 0 {
		t.Fatalf("refresh token reuse detected %d times", n)
	}
}

// TestProxyOnErrorBudget: an upstream that answers 401 (or a caller's
// Refresh-On status) for reasons other than the token costs one provider
// refresh per on-error interval, not one per call; within it the upstream's
// answer is passed back to the caller, unreplayed.
func TestProxyOnErrorBudget(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("c1", provAcme, nil)
	h.upstream.mu.Lock()
	h.upstream.rejectAll = http.StatusUnauthorized
	h.upstream.mu.Unlock()
	for i := range 20 {
		r := h.do("GET", "/v1/proxy/c1/me", h.tokensKey, nil, nil)
		if r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), "says no") {
			t.Fatalf("call %d: %d %s, want the upstream's 401 passed back", i, r.status, r.body)
		}
	}
	if n := h.authz.RefreshCalls(); n != 1 {
		t.Fatalf("%d refreshes for 20 serial calls answered 401, want 1", n)
	}
	upstreamCalls := len(h.upstream.calls())
	if upstreamCalls != 21 {
		t.Fatalf("the upstream saw %d calls, want 21 (one replay, after the one refresh)", upstreamCalls)
	}

	// 300 calls at 16 concurrent, with Refresh-On: 403 against an upstream
	// that answers 403 for its own reasons.
	h.upstream.mu.Lock()
	h.upstream.rejectAll = http.StatusForbidden
	h.upstream.mu.Unlock()
	h.clock.Advance(time.Minute) // the budget allows one more refresh
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range 300 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			req, _ := http.NewRequest("GET", h.api.URL+"/v1/proxy/c1/me", nil)
			req.Header.Set("Authorization", "Bearer "+h.tokensKey)
			req.Header.Set("Refresh-On", "403")
			if resp, err := h.api.Client().Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if n := h.authz.RefreshCalls(); n != 2 {
		t.Fatalf("%d refreshes in all, want 2: one per on-error interval", n)
	}
}
