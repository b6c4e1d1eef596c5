package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestMetricsWired: the assembled app serves its metrics at /metrics with
// the admin key, with the runtime collectors and tokenbroker's families fed
// by the broker, the server and the store; and two apps in one process
// each have their own registry.
func TestMetricsWired(t *testing.T) {
	e := newE2E(t)
	other := newE2E(t) // would fail to register on a shared registry
	access, refresh, _ := e.authz.IssueTokens(t, "offline")
	if code, body := e.do(http.MethodPost, "/v1/connections", map[string]any{
		"id": "alice", "provider": "acme", "access_token": access, "refresh_token": refresh, "expires_in": 3600,
	}); code != http.StatusCreated {
		t.Fatalf("import: %d %v", code, body)
	}
	e.token("alice")

	scrape := func(x *e2e, key string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, x.base+"/metrics", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := scrape(e, ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without a key: status %d, want 401", code)
	}
	code, text := scrape(e, e.key)
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d", code)
	}
	for _, want := range []string{
		"go_goroutines ",
		"process_start_time_seconds ",
		`tokenbroker_refresh_attempts_total{outcome="terminal",provider="acme"} 0`,
		`tokenbroker_connections{provider="acme",status="active"} 1`,
		`tokenbroker_token_requests_total{result="ok"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(text, access) || strings.Contains(text, refresh) || strings.Contains(text, e.key) {
		t.Error("a token or the API key appears in /metrics")
	}

	// The other app counted nothing of this one's work.
	if code, text := scrape(other, other.key); code != http.StatusOK {
		t.Errorf("other app's /metrics: status %d", code)
	} else if strings.Contains(text, `tokenbroker_token_requests_total{result="ok"} 1`) {
		t.Error("the other app's registry shows this app's request")
	}
}
