package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// A proxied call can be followed from the caller through tokenbroker to
// the provider: one trace, with the caller's trace id, spans for the
// request, the refresh (with its reason), the store and the provider
// calls, and the trace context passed on to the provider's API.
func TestTracingFollowsACallThroughTheProxy(t *testing.T) {
	authz := authztest.New(t, authztest.Options{AccessTokenLifespan: time.Hour})
	var mu sync.Mutex
	var seenParents []string
	rejected := map[string]bool{}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seenParents = append(seenParents, r.Header.Get("Traceparent"))
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		first := !rejected[tok] && len(rejected) == 0
		if first {
			rejected[tok] = true
		}
		mu.Unlock()
		if first { // the imported token is stale at the API: refresh on error
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(api.Close)
	dir := t.TempDir()
	t.Setenv("TRACING_ACME_SECRET", authz.ClientSecret)
	cfgPath := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %[1]s
providers:
  - name: acme
    token_url: %[2]s
    client_id: %[3]s
    client_secret_env: TRACING_ACME_SECRET
    api_base_url: %[4]s
    refresh_on: [401]
`, dir, authz.TokenURL(), authz.ClientID, api.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Read(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	a, err := app.New(context.Background(), cfg, app.Options{Logger: slog.New(slog.DiscardHandler), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var out bytes.Buffer
	if _, err := a.BootstrapAPIKey(context.Background(), &out, time.Now()); err != nil {
		t.Fatal(err)
	}
	key := keyRe.FindString(out.String())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ServeListener(ctx, ln, nil) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ln.Addr().String()

	call := func(method, path, body, traceparent string) int {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		if traceparent != "" {
			req.Header.Set("Traceparent", traceparent)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	access, refresh, _ := authz.IssueTokens(t, "read")
	if code := call("POST", "/v1/connections", fmt.Sprintf(`{"id":"c1","provider":"acme","access_token":%q,"refresh_token":%q,"expires_in":3600}`, access, refresh), ""); code != http.StatusCreated {
		t.Fatalf("import: %d", code)
	}

	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	if code := call("GET", "/v1/proxy/c1/things", "", "00-"+callerTrace+"-00f067aa0ba902b7-01"); code != http.StatusOK {
		t.Fatalf("proxy: %d", code)
	}
	const forcedTrace = "0af7651916cd43dd8448eb211c80319c"
	if code := call("POST", "/v1/connections/c1/refresh", "", "00-"+forcedTrace+"-b7ad6b7169203331-01"); code != http.StatusOK {
		t.Fatalf("refresh: %d", code)
	}
	cancel()
	<-done
	done <- nil

	mu.Lock()
	for i, p := range seenParents {
		if !strings.HasPrefix(p, "00-"+callerTrace+"-") {
			t.Errorf("API call %d carried traceparent %q, want the caller's trace %s", i, p, callerTrace)
		}
	}
	if len(seenParents) != 2 {
		t.Errorf("the API saw %d calls, want 2 (401, then the replay)", len(seenParents))
	}
	mu.Unlock()

	type found struct{ server, refresh, store, provider bool }
	byTrace := map[string]*found{callerTrace: {}, forcedTrace: {}}
	reasons := map[string]string{}
	for _, s := range spans.GetSpans() {
		f := byTrace[s.SpanContext.TraceID().String()]
		if f == nil {
			continue
		}
		switch {
		case s.Name == "/v1/proxy/{id}/{path...}" || s.Name == "POST /v1/connections/{id}/refresh":
			f.server = true
		case s.Name == "tokenbroker.refresh":
			f.refresh = true
			for _, kv := range s.Attributes {
				if kv.Key == "tokenbroker.refresh.reason" {
					reasons[s.SpanContext.TraceID().String()] = kv.Value.AsString()
				}
			}
		case strings.HasPrefix(s.Name, "store."):
			f.store = true
		case strings.HasPrefix(s.Name, "provider "):
			f.provider = true
		}
		for _, kv := range s.Attributes {
			if v := kv.Value.String(); strings.Contains(v, access) || strings.Contains(v, refresh) || strings.Contains(v, key) {
				t.Errorf("span %s records a secret in %s", s.Name, kv.Key)
			}
		}
	}
	for tr, f := range byTrace {
		if !f.server || !f.refresh || !f.store || !f.provider {
			var names []string
			for _, s := range spans.GetSpans() {
				names = append(names, s.Name)
			}
			t.Errorf("trace %s: spans found %+v; all spans: %v", tr, *f, names)
		}
	}
	if reasons[callerTrace] != "on-error" || reasons[forcedTrace] != "forced" {
		t.Errorf("refresh reasons %v, want on-error for the proxied call and forced for the refresh", reasons)
	}
}
