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

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// shutdownEnv is a server whose provider API holds every request until
// released, so a test can have a proxied call in flight at shutdown.
type shutdownEnv struct {
	a       *app.App
	base    string
	key     string
	logs    *syncBuffer
	arrived chan struct{} // one value per request reaching the API
	release chan struct{} // closed to let held requests answer
	cancel  context.CancelFunc
	force   chan struct{}
	done    chan error

	waitOnce sync.Once
	err      error
}

// wait returns what ServeGraceful returned.
func (e *shutdownEnv) wait() error {
	e.waitOnce.Do(func() { e.err = <-e.done })
	return e.err
}

func newShutdownEnv(t *testing.T, shutdownYAML string) *shutdownEnv {
	t.Helper()
	e := &shutdownEnv{logs: &syncBuffer{}, arrived: make(chan struct{}, 16), release: make(chan struct{}), force: make(chan struct{}), done: make(chan error, 1)}
	authz := authztest.New(t, authztest.Options{AccessTokenLifespan: time.Hour})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.arrived <- struct{}{}
		select {
		case <-e.release:
			fmt.Fprint(w, `{"ok":true}`)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(api.Close)
	t.Cleanup(func() {
		select {
		case <-e.release:
		default:
			close(e.release)
		}
	})
	dir := t.TempDir()
	t.Setenv("SHUTDOWN_ACME_SECRET", authz.ClientSecret)
	cfgPath := filepath.Join(dir, "tokenbroker.yaml")
	cfgText := fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %[1]s
%[5]s
providers:
  - name: acme
    token_url: %[2]s
    client_id: %[3]s
    client_secret_env: SHUTDOWN_ACME_SECRET
    api_base_url: %[4]s
`, dir, authz.TokenURL(), authz.ClientID, api.URL, shutdownYAML)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Read(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(e.logs, nil))
	e.a, err = app.New(context.Background(), cfg, app.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.a.Close() })
	var out bytes.Buffer
	if _, err := e.a.BootstrapAPIKey(context.Background(), &out, time.Now()); err != nil {
		t.Fatal(err)
	}
	e.key = keyRe.FindString(out.String())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.base = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- e.a.ServeGraceful(ctx, ln, app.ServeOptions{Force: e.force}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.force:
		default:
			close(e.force)
		}
		_ = e.wait()
	})

	access, refresh, _ := authz.IssueTokens(t, "read")
	body := fmt.Sprintf(`{"id":"c1","provider":"acme","access_token":%q,"refresh_token":%q,"expires_in":3600}`, access, refresh)
	if code, _ := e.request(t, "POST", "/v1/connections", body); code != http.StatusCreated {
		t.Fatalf("import: %d", code)
	}
	return e
}

func (e *shutdownEnv) request(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// proxyInFlight starts a proxied call and returns once the provider's API
// holds it; the channel gets its status.
func (e *shutdownEnv) proxyInFlight(t *testing.T) <-chan int {
	t.Helper()
	status := make(chan int, 1)
	go func() {
		code, _ := e.request(t, "GET", "/v1/proxy/c1/slow", "")
		status <- code
	}()
	<-e.arrived
	return status
}

// waitLog waits for a log line; the server logs as it goes.
func (e *shutdownEnv) waitLog(t *testing.T, s string) {
	t.Helper()
	for !strings.Contains(e.logs.String(), s) {
		select {
		case err := <-e.done:
			e.waitOnce.Do(func() { e.err = err })
			t.Fatalf("serve returned %v before logging %q:\n%s", err, s, e.logs)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// An in-flight request finishes during the grace period and the shutdown
// is orderly: nil error (exit 0) and a summary line.
func TestShutdownDrainsInFlight(t *testing.T) {
	e := newShutdownEnv(t, "")
	status := e.proxyInFlight(t)
	e.cancel()
	e.waitLog(t, "shutting down")
	// The listener closes (drain_delay is 0) while the request runs.
	for {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(5 * time.Millisecond)
	}
	close(e.release)
	if code := <-status; code != http.StatusOK {
		t.Errorf("the in-flight proxied call got %d, want 200", code)
	}
	if err := e.wait(); err != nil {
		t.Errorf("orderly shutdown returned %v", err)
	}
	if !strings.Contains(e.logs.String(), "shutdown complete") || !strings.Contains(e.logs.String(), "finished_in_flight=1") {
		t.Errorf("no summary line:\n%s", e.logs)
	}
	if !strings.Contains(e.logs.String(), "grace=1m5s") {
		t.Errorf("the default grace is not proxy.timeout+5s:\n%s", e.logs)
	}
}

// During the drain delay /readyz fails at once while requests are still
// served; a second signal ends the shutdown at once.
func TestShutdownReadyzFailsFirstAndSecondSignalForces(t *testing.T) {
	e := newShutdownEnv(t, "shutdown:\n  drain_delay: 1h\n")
	if code, _ := e.request(t, "GET", "/readyz", ""); code != http.StatusOK {
		t.Fatalf("/readyz before shutdown: %d", code)
	}
	status := e.proxyInFlight(t)
	e.cancel()
	e.waitLog(t, "shutting down")
	if code, _ := e.request(t, "GET", "/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the drain: %d, want 503", code)
	}
	if code, _ := e.request(t, "GET", "/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz during the drain: %d, want 200 (still serving)", code)
	}
	close(e.force)
	err := e.wait()
	if err == nil || !strings.Contains(err.Error(), "second signal") || !strings.Contains(err.Error(), "1 requests were cut off") {
		t.Errorf("forced shutdown returned %v", err)
	}
	if code := <-status; code == http.StatusOK {
		t.Errorf("the cut-off request got 200")
	}
}

// A grace period that runs out says so, in words, instead of a bare
// "context deadline exceeded".
func TestShutdownGraceRunsOut(t *testing.T) {
	e := newShutdownEnv(t, "shutdown:\n  grace: 1ms\n")
	status := e.proxyInFlight(t)
	e.cancel()
	err := e.wait()
	if err == nil || !strings.Contains(err.Error(), "shutdown.grace (1ms) ran out with 1 requests still running") {
		t.Errorf("grace ran out: %v", err)
	}
	<-status
}
