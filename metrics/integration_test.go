package metrics

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tokenbroker/tokenbroker/oauth"
)

var jsonHeader = http.Header{"Content-Type": {"application/json"}}

// TestBrokerRefreshOutcomes drives the real broker through a successful, a
// transient and a terminal refresh and reads the counters, the duration
// histogram and the connections gauge back from the registry.
func TestBrokerRefreshOutcomes(t *testing.T) {
	r := newRig(t)
	for _, id := range []string{"c-ok", "c-flaky", "c-dead"} {
		r.importConn(id)
	}
	fams := families(t, r.registry)
	if v := value(t, fams, connGauge, labels{"provider", provAcme, "status", "active"}); v != 3 {
		t.Errorf("after three imports active = %v, want 3", v)
	}

	if err := r.refresh("c-ok"); err != nil {
		t.Fatalf("refresh c-ok: %v", err)
	}
	r.authz.FailNext(1, http.StatusServiceUnavailable, jsonHeader, `{"error":"temporarily_unavailable"}`)
	if err := r.refresh("c-flaky"); !errors.Is(err, oauth.ErrTransient) {
		t.Fatalf("refresh c-flaky: %v, want a transient error", err)
	}
	r.authz.FailNext(1, http.StatusBadRequest, jsonHeader, `{"error":"invalid_grant"}`)
	if err := r.refresh("c-dead"); !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("refresh c-dead: %v, want reauth required", err)
	}

	fams = families(t, r.registry)
	for outcome, want := range map[string]float64{"success": 1, "transient": 1, "terminal": 1} {
		if v := value(t, fams, "tokenbroker_refresh_attempts_total", labels{"provider", provAcme, "outcome", outcome}); v != want {
			t.Errorf("refresh attempts %s = %v, want %v", outcome, v, want)
		}
	}
	if n := histogramCount(fams, "tokenbroker_refresh_duration_seconds", labels{"provider", provAcme}); n != 3 {
		t.Errorf("refresh durations observed %d times, want 3", n)
	}
	for status, want := range map[string]float64{"active": 1, "failing": 1, "needs_reauth": 1, "revoked": 0} {
		if v := value(t, fams, connGauge, labels{"provider", provAcme, "status", status}); v != want {
			t.Errorf("connections %s = %v, want %v", status, v, want)
		}
	}

	// The failing connection recovers: it counts as active again.
	if err := r.refresh("c-flaky"); err != nil {
		t.Fatalf("second refresh of c-flaky: %v", err)
	}
	fams = families(t, r.registry)
	if v := value(t, fams, connGauge, labels{"provider", provAcme, "status", "active"}); v != 2 {
		t.Errorf("after recovery active = %v, want 2", v)
	}
	if v := value(t, fams, connGauge, labels{"provider", provAcme, "status", "failing"}); v != 0 {
		t.Errorf("after recovery failing = %v, want 0", v)
	}
	if v := value(t, fams, "tokenbroker_refresh_attempts_total", labels{"provider", provAcme, "outcome", "success"}); v != 2 {
		t.Errorf("refresh attempts success = %v, want 2", v)
	}
	r.assertNoSecrets(r.exposition())
}

// TestBrokerLeaseWait: a refresh that finds another replica holding the
// connection's lease waits for it, and the wait is observed.
func TestBrokerLeaseWait(t *testing.T) {
	r := newRig(t)
	r.importConn("c-1")
	ctx := t.Context()
	if _, err := r.store.AcquireLease(ctx, "c-1", "other-replica", time.Minute); err != nil {
		t.Fatalf("take the lease for another replica: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.refresh("c-1") }()
	select {
	case <-r.leases.held:
	case err := <-done:
		t.Fatalf("refresh finished (%v) without meeting the held lease", err)
	}
	if n := histogramCount(families(t, r.registry), "tokenbroker_lease_wait_seconds", labels{"provider", provAcme}); n != 0 {
		t.Errorf("lease wait observed %d times while still waiting", n)
	}
	if err := r.store.ReleaseLease(ctx, "c-1", "other-replica"); err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("refresh after the lease was released: %v", err)
	}
	if n := histogramCount(families(t, r.registry), "tokenbroker_lease_wait_seconds", labels{"provider", provAcme}); n != 1 {
		t.Errorf("lease wait observed %d times, want 1", n)
	}
}

// TestMetricsEndpoint scrapes /metrics through the real server: it needs an
// admin key, serves every family, counts token and proxy answers by
// result, and never shows a token or key.
func TestMetricsEndpoint(t *testing.T) {
	r := newRig(t)
	r.importConn("c-ok")
	r.importConn("c-dead")
	r.authz.FailNext(1, http.StatusBadRequest, jsonHeader, `{"error":"invalid_grant"}`)
	if err := r.refresh("c-dead"); !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("refresh c-dead: %v", err)
	}

	calls := []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/connections/c-ok/token", http.StatusOK},
		{"GET", "/v1/connections/c-ok/token", http.StatusOK},
		{"GET", "/v1/connections/c-dead/token", http.StatusConflict},
		{"GET", "/v1/connections/nope/token", http.StatusNotFound},
		{"GET", "/v1/proxy/c-ok/things", http.StatusOK},
		{"GET", "/v1/proxy/nope/things", http.StatusNotFound},
		{"GET", "/no/such/route", http.StatusNotFound},
	}
	for _, c := range calls {
		resp, body := r.get(c.path, r.tokensKey)
		if resp.StatusCode != c.want {
			t.Fatalf("%s %s: status %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
		r.rememberTokens(body)
	}
	// Unauthenticated token requests count too: a caller with a bad key.
	if resp, _ := r.get("/v1/connections/c-ok/token", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token without a key: status %d", resp.StatusCode)
	}

	for _, tc := range []struct {
		name, key string
		want      int
	}{
		{"no key", "", http.StatusUnauthorized},
		{"wrong key", "tbk_not_a_real_key", http.StatusUnauthorized},
		{"tokens key", r.tokensKey, http.StatusForbidden},
	} {
		if resp, body := r.get("/metrics", tc.key); resp.StatusCode != tc.want {
			t.Errorf("/metrics with %s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		} else if bytes.Contains(body, []byte("tokenbroker_")) {
			t.Errorf("/metrics with %s: the refusal carries metrics", tc.name)
		}
	}

	resp, body := r.get("/metrics", r.adminKey)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics with an admin key: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the text exposition format", ct)
	}
	r.assertNoSecrets(string(body))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v", err)
	}
	for _, name := range []string{
		"tokenbroker_refresh_attempts_total",
		"tokenbroker_refresh_duration_seconds",
		"tokenbroker_connections",
		"tokenbroker_store_errors_total",
		"tokenbroker_token_requests_total",
		"tokenbroker_proxy_requests_total",
		"tokenbroker_http_requests_total",
	} {
		if _, ok := fams[name]; !ok {
			t.Errorf("family %s missing from /metrics", name)
		}
	}
	checks := []struct {
		family string
		ls     labels
		want   float64
	}{
		{"tokenbroker_token_requests_total", labels{"result", "ok"}, 2},
		{"tokenbroker_token_requests_total", labels{"result", "reauth_required"}, 1},
		{"tokenbroker_token_requests_total", labels{"result", "not_found"}, 1},
		{"tokenbroker_token_requests_total", labels{"result", "unauthenticated"}, 1},
		{"tokenbroker_proxy_requests_total", labels{"result", "ok"}, 1},
		{"tokenbroker_proxy_requests_total", labels{"result", "not_found"}, 1},
		{"tokenbroker_http_requests_total", labels{"route", "GET /v1/connections/{id}/token", "code", "200"}, 2},
		{"tokenbroker_http_requests_total", labels{"route", "GET /v1/connections/{id}/token", "code", "409"}, 1},
		{"tokenbroker_http_requests_total", labels{"route", "unmatched", "code", "404"}, 1},
		{"tokenbroker_http_requests_total", labels{"route", "GET /metrics", "code", "403"}, 1},
		{"tokenbroker_refresh_attempts_total", labels{"provider", provAcme, "outcome", "terminal"}, 1},
		{"tokenbroker_connections", labels{"provider", provAcme, "status", "active"}, 1},
		{"tokenbroker_connections", labels{"provider", provAcme, "status", "needs_reauth"}, 1},
	}
	for _, c := range checks {
		if got := value(t, fams, c.family, c.ls); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.family, c.ls, got, c.want)
		}
	}
	// No connection id is ever a label value.
	for _, id := range []string{"c-ok", "c-dead", "nope"} {
		if strings.Contains(string(body), `"`+id+`"`) {
			t.Errorf("connection id %s appears as a label value", id)
		}
	}
}

// get calls the API with key (none when empty) and returns the answer.
func (r *rig) get(path, key string) (*http.Response, []byte) {
	r.t.Helper()
	req, err := http.NewRequestWithContext(r.t.Context(), http.MethodGet, r.api.URL+path, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := r.api.Client().Do(req)
	if err != nil {
		r.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp, body
}

// rememberTokens notes an access token in an API answer, so that the leak
// check covers tokens the broker obtained by itself.
func (r *rig) rememberTokens(body []byte) {
	const field = `"access_token":"`
	s := string(body)
	if i := strings.Index(s, field); i >= 0 {
		rest := s[i+len(field):]
		if j := strings.IndexByte(rest, '"'); j > 0 {
			r.remember(rest[:j])
		}
	}
}

// exposition renders the registry in the text format.
func (r *rig) exposition() string {
	r.t.Helper()
	mfs, err := r.registry.Gather()
	if err != nil {
		r.t.Fatalf("Gather: %v", err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			r.t.Fatalf("encode: %v", err)
		}
	}
	return buf.String()
}

// assertNoSecrets fails if any token or key the test saw is in text. It
// reports how many, never which.
func (r *rig) assertNoSecrets(text string) {
	r.t.Helper()
	secrets := r.seen()
	if len(secrets) < 4 {
		r.t.Fatalf("only %d secrets recorded: the leak check would prove little", len(secrets))
	}
	leaked := 0
	for _, s := range secrets {
		if strings.Contains(text, s) {
			leaked++
		}
	}
	if leaked > 0 {
		r.t.Errorf("%d token or key values appear in the metrics exposition", leaked)
	}
}
