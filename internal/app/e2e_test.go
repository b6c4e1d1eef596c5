package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/seal"
)

// upstream is the provider's API: it answers 401 to tokens it was told are
// stale and records what reached it.
type upstream struct {
	mu       sync.Mutex
	stale    map[string]bool
	requests []seen
}

type seen struct {
	method, path, auth, body, header string
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.requests = append(u.requests, seen{r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), string(body), r.Header.Get("X-Custom")})
	stale := u.stale[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	u.mu.Unlock()
	if stale {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"message":"token expired"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"ok":true,"path":%q}`, r.URL.Path)
}

type e2e struct {
	t       *testing.T
	dir     string
	cfgPath string
	clock   *fakeclock.Offset // shared by the broker, the store and the token endpoint
	authz   *authztest.Server
	api     *upstream
	a       *app.App
	base    string
	key     string
	stop    func()
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	return newE2EWith(t, "")
}

// newE2EWith is newE2E with more top-level configuration appended.
func newE2EWith(t *testing.T, extra string) *e2e {
	t.Helper()
	e := &e2e{t: t, dir: t.TempDir(), clock: &fakeclock.Offset{}, api: &upstream{stale: map[string]bool{}}, logs: &syncBuffer{}}
	e.authz = authztest.New(t, authztest.Options{AccessTokenLifespan: time.Hour})
	apiSrv := httptest.NewServer(e.api)
	t.Cleanup(apiSrv.Close)
	t.Setenv("E2E_ACME_SECRET", e.authz.ClientSecret)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %[1]s
database: sqlite:%[1]s/tokenbroker.db
encryption_keys_file: %[1]s/keys
log_level: debug
providers:
  - name: acme
    token_url: %[2]s
    introspection_url: %[3]s
    revocation_url: %[4]s
    client_id: %[5]s
    client_secret_env: E2E_ACME_SECRET
    api_base_url: %[6]s/api
    refresh_on: [401]
    refresh_window: 5m
`, e.dir, e.authz.TokenURL(), e.authz.IntrospectionURL(), e.authz.RevocationURL(), e.authz.ClientID, apiSrv.URL) + extra
	e.cfgPath = filepath.Join(e.dir, "tokenbroker.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	t.Cleanup(func() { e.stop() })
	return e
}

var keyRe = regexp.MustCompile(`tbk_[A-Za-z0-9_-]+`)

// start runs the server in-process on a random port, as `serve` would.
func (e *e2e) start() {
	e.t.Helper()
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := serveApp(e.t, e.cfgPath, nil, app.Options{Logger: log, Now: e.clock.Now}, e.clock.Now())
	if srv.key != "" {
		e.key = srv.key
	}
	e.a, e.base = srv.a, srv.base
	e.stop = func() {
		if err := srv.stop(); err != nil {
			e.t.Errorf("serve: %v", err)
		}
		e.stop = func() {}
	}
}

func (e *e2e) do(method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+e.key)
	req.Header.Set("X-Custom", "kept")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (e *e2e) token(id string) string {
	e.t.Helper()
	code, body := e.do(http.MethodGet, "/v1/connections/"+id+"/token", nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET token %s: %d %v", id, code, body["error"])
	}
	tok, _ := body["access_token"].(string)
	if tok == "" {
		e.t.Fatal("no access_token in the answer")
	}
	return tok
}

func TestServerEndToEnd(t *testing.T) {
	e := newE2E(t)
	if e.key == "" {
		t.Fatal("no bootstrap API key was printed")
	}
	access, refresh, _ := e.authz.IssueTokens(t, "offline")
	code, body := e.do(http.MethodPost, "/v1/connections", map[string]any{
		"id": "alice", "provider": "acme", "access_token": access, "refresh_token": refresh, "expires_in": 3600,
	})
	if code != http.StatusCreated {
		t.Fatalf("import: %d %v", code, body)
	}
	if got := e.token("alice"); got != access {
		t.Fatal("a valid token was not handed out as imported")
	}
	if e.authz.RefreshCalls() != 0 {
		t.Fatal("a valid token was refreshed")
	}

	// Let it expire: the next GET refreshes once, with the rotated refresh
	// token saved.
	e.clock.Advance(2 * time.Hour)
	refreshed := e.token("alice")
	if refreshed == access || e.authz.RefreshCalls() != 1 {
		t.Fatalf("after expiry: refreshes %d, same token %v", e.authz.RefreshCalls(), refreshed == access)
	}
	if again := e.token("alice"); again != refreshed || e.authz.RefreshCalls() != 1 {
		t.Fatal("a fresh token was refreshed again")
	}

	// The API answers 401 once for the current token: the proxy refreshes
	// and replays the request with its method, headers and body.
	e.api.mu.Lock()
	e.api.stale[refreshed] = true
	e.api.requests = nil
	e.api.mu.Unlock()
	req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/proxy/alice/v1/things?x=1", strings.NewReader(`{"name":"thing"}`))
	req.Header.Set("Authorization", "Bearer "+e.key)
	req.Header.Set("X-Custom", "kept")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pbody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(pbody), `"/api/v1/things"`) {
		t.Fatalf("proxy: %d %s", resp.StatusCode, pbody)
	}
	if e.authz.RefreshCalls() != 2 {
		t.Fatalf("proxy 401: %d refreshes in all, want 2", e.authz.RefreshCalls())
	}
	e.api.mu.Lock()
	reqs := append([]seen(nil), e.api.requests...)
	e.api.mu.Unlock()
	if len(reqs) != 2 {
		t.Fatalf("upstream saw %d requests, want the original and one replay", len(reqs))
	}
	for i, r := range reqs {
		if r.method != http.MethodPost || r.path != "/api/v1/things?x=1" || r.body != `{"name":"thing"}` || r.header != "kept" {
			t.Fatalf("request %d reached the API as %s %s (body %d bytes, header %q)", i, r.method, r.path, len(r.body), r.header)
		}
		if r.auth == "Bearer "+e.key {
			t.Fatal("the caller's API key was forwarded to the provider")
		}
	}
	if reqs[0].auth == reqs[1].auth {
		t.Fatal("the replay carried the stale token")
	}
	current := e.token("alice")

	// More connections, then rotate the encryption key: every token still
	// reads, and every row is now sealed under the new key.
	for i := range 3 {
		a, r, _ := e.authz.IssueTokens(t, "offline")
		code, body := e.do(http.MethodPost, "/v1/connections", map[string]any{
			"id": fmt.Sprintf("user-%d", i), "provider": "acme", "access_token": a, "refresh_token": r, "expires_in": 3600,
		})
		if code != http.StatusCreated {
			t.Fatalf("import user-%d: %d %v", i, code, body)
		}
	}
	before := map[string]string{"alice": current}
	for i := range 3 {
		id := fmt.Sprintf("user-%d", i)
		before[id] = e.token(id)
	}
	newKey, err := seal.Rotate(filepath.Join(e.dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.a.Keys.Reload(); err != nil {
		t.Fatal(err)
	}
	if n, err := e.a.Broker.Reseal(context.Background()); err != nil || n != 4 {
		t.Fatalf("reseal: %d, %v", n, err)
	}
	if e.a.Keys.PrimaryID() != newKey {
		t.Fatal("the rotated key is not primary")
	}
	for id, want := range before {
		if got := e.token(id); got != want {
			t.Fatalf("%s: a different token after key rotation", id)
		}
	}

	// Restart: nothing is lost.
	e.stop()
	e.start()
	for id, want := range before {
		if got := e.token(id); got != want {
			t.Fatalf("%s: a different token after restart", id)
		}
	}
	code, body = e.do(http.MethodGet, "/v1/connections", nil)
	if code != http.StatusOK {
		t.Fatalf("list: %d", code)
	}
	if conns, _ := body["connections"].([]any); len(conns) != 4 {
		t.Fatalf("list after restart: %d connections, want 4", len(conns))
	}

	// No token is stored in plaintext, in the database or its WAL, and no
	// token reached the logs.
	e.stop()
	secrets := []string{access, refresh, refreshed, current}
	for _, v := range before {
		secrets = append(secrets, v)
	}
	files, _ := filepath.Glob(filepath.Join(e.dir, "tokenbroker.db*"))
	if len(files) == 0 {
		t.Fatal("no database file found")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if bytes.Contains(raw, []byte(s)) {
				t.Fatalf("%s holds a token in plaintext", filepath.Base(f))
			}
		}
	}
	logs := e.logs.String()
	for _, s := range append(secrets, e.key) {
		if strings.Contains(logs, s) {
			t.Fatal("a secret appears in the logs")
		}
	}
}
