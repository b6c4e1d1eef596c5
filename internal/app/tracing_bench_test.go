package app_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// BenchmarkTokenTracing measures GET /v1/connections/{id}/token through the
// whole handler (auth, broker, token cache, SQLite) with tracing off (no
// instrumentation wired) and on (every request sampled, spans batched to
// an exporter that drops them, so only tokenbroker's side is measured).
// BENCHMARKS.md has the command and figures.
func BenchmarkTokenTracing(b *testing.B) {
	for _, mode := range []string{"off", "on"} {
		b.Run(mode, func(b *testing.B) {
			var tp trace.TracerProvider
			if mode == "on" {
				sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
				tp = sdk
			}
			h, key := benchApp(b, tp, "", false)
			req := httptest.NewRequest("GET", "/v1/connections/c1/token", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}

// benchApp builds the app as serve does, with one connection c1 at a
// fosite provider whose api_base_url is apiBase (may be empty), tracing to
// tp (nil: off), and, with runAudit, the audit writer running.
func benchApp(b *testing.B, tp trace.TracerProvider, apiBase string, runAudit bool) (http.Handler, string) {
	authz := authztest.New(b, authztest.Options{AccessTokenLifespan: time.Hour})
	dir := b.TempDir()
	b.Setenv("BENCH_ACME_SECRET", authz.ClientSecret)
	cfgPath := filepath.Join(dir, "tokenbroker.yaml")
	cfgText := fmt.Sprintf("listen: 127.0.0.1:0\ndata_dir: %s\nscheduler:\n  disabled: true\nproviders:\n  - name: acme\n    token_url: %s\n    client_id: %s\n    client_secret_env: BENCH_ACME_SECRET\n",
		dir, authz.TokenURL(), authz.ClientID)
	if apiBase != "" {
		cfgText += "    api_base_url: " + apiBase + "\n"
	}
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Read(cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, app.Options{Logger: slog.New(slog.DiscardHandler), TracerProvider: tp})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	if runAudit && a.Audit != nil {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); a.Audit.Run(ctx) }()
		b.Cleanup(func() { cancel(); <-done })
	}
	var out bytes.Buffer
	if _, err := a.BootstrapAPIKey(context.Background(), &out, time.Now()); err != nil {
		b.Fatal(err)
	}
	key := keyRe.FindString(out.String())
	h := a.Handler()
	access, refresh, _ := authz.IssueTokens(b, "read")
	req := httptest.NewRequest("POST", "/v1/connections", strings.NewReader(fmt.Sprintf(`{"id":"c1","provider":"acme","access_token":%q,"refresh_token":%q,"expires_in":3600}`, access, refresh)))
	req.Header.Set("Authorization", "Bearer "+key)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusCreated {
		b.Fatalf("import: %d %s", w.Code, w.Body)
	}
	return h, key
}
