package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

// logSink keeps every log record (all levels) as a JSON line.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.buf.String()), "\n")
}

// requestLogs returns the request log lines, decoded.
func (h *harness) requestLogs() []map[string]any {
	var out []map[string]any
	for _, line := range h.logs.lines() {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "request" {
			out = append(out, rec)
		}
	}
	return out
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// tokenRecorder sits between the broker's OAuth endpoint and the
// authorization server and remembers every token value issued, so tests can
// check that none of them leaks.
type tokenRecorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	seen []string
}

func (tr *tokenRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := tr.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var tok struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if json.Unmarshal(body, &tok) == nil {
		tr.add(tok.AccessToken, tok.RefreshToken)
	}
	return resp, nil
}

func (tr *tokenRecorder) add(values ...string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, v := range values {
		if v != "" {
			tr.seen = append(tr.seen, v)
		}
	}
}

func (tr *tokenRecorder) all() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.seen...)
}

// upstream is a fake provider API behind the proxy. By default it answers
// 200 with what it received; reject makes it answer a status for one token.
type upstream struct {
	*httptest.Server
	mu       sync.Mutex
	requests []seenRequest
	reject   map[string]int // access token -> status
	// rejectAll, when not zero, is the status for every token: an API that
	// refuses a call for reasons other than the token.
	rejectAll int
}

type seenRequest struct {
	Method string
	URI    string // request URI as received (escaped path and query)
	Host   string
	Header http.Header
	Body   []byte
}

func (u *upstream) calls() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.requests...)
}

func (u *upstream) rejectToken(token string, status int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reject[token] = status
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{reject: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		u.mu.Lock()
		u.requests = append(u.requests, seenRequest{Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: body})
		status := 0
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			status = u.reject[tok]
		}
		if u.rejectAll != 0 {
			status = u.rejectAll
		}
		u.mu.Unlock()
		if status != 0 {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(status)
			_, _ = io.WriteString(w, `{"provider":"says no"}`)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Upstream", "yes")
		_, _ = w.Write(body)
	}))
	t.Cleanup(u.Close)
	return u
}

// harness is a server wired to real pieces: SQLite store, key ring, broker,
// and a fosite authorization server as the provider.
type harness struct {
	t        testing.TB
	clock    *fakeclock.Clock
	logs     *logSink
	store    *sqlite.Store
	keyring  *seal.KeyRing
	broker   *broker.Broker
	authz    *authztest.Server
	tokens   *tokenRecorder
	upstream *upstream
	server   *Server
	api      *httptest.Server

	adminKey, tokensKey string
}

type harnessOptions struct {
	authz   authztest.Options
	server  func(*Options)
	noCache bool
	// quiet sends the logs nowhere (fuzzing runs long).
	quiet bool
	// issuer configures the acme provider with the authorization server's
	// issuer (for RFC 9207 checks) besides its explicit endpoints.
	issuer bool
}

// Provider names of the harness.
const (
	provAcme   = "acme"   // authorization server + proxy target + revocation
	provNoAPI  = "noapi"  // no api_base_url
	provFlaky  = "flaky"  // revocation endpoint that answers 503
	provNoDflt = "nodflt" // no default lifetime, no revocation
)

func newHarness(t testing.TB, ho harnessOptions) *harness {
	t.Helper()
	ctx := t.Context()
	h := &harness{t: t, clock: fakeclock.New(time.Now().UTC().Truncate(time.Second)), logs: &logSink{}}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if ho.quiet {
		log = slog.New(slog.DiscardHandler)
	}

	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "tb.db"), sqlite.Options{Now: h.clock.Now, Logger: log})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	h.store = st
	kr, _, err := seal.LoadOrCreate(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatalf("key ring: %v", err)
	}
	h.keyring = kr

	h.authz = authztest.New(t, ho.authz)
	h.tokens = &tokenRecorder{base: http.DefaultTransport}
	failingRevoke := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":"temporarily_unavailable"}`)
	}))
	t.Cleanup(failingRevoke.Close)

	issuer := ""
	if ho.issuer {
		issuer = h.authz.Issuer
	}
	endpoint := func(revocationURL string) *oauth.Endpoint {
		e, err := oauth.NewEndpoint(oauth.Config{
			Issuer:           issuer,
			ClientID:         h.authz.ClientID,
			ClientSecret:     h.authz.ClientSecret,
			TokenURL:         h.authz.TokenURL(),
			AuthorizeURL:     h.authz.AuthorizeURL(), // for the connect flow (connect_test.go)
			IntrospectionURL: h.authz.IntrospectionURL(),
			RevocationURL:    revocationURL,
			Retry:            oauth.Backoff{MaxAttempts: 1},
			HTTPClient:       &http.Client{Transport: h.tokens, Timeout: 10 * time.Second},
			Now:              h.clock.Now,
			Logger:           log,
		})
		if err != nil {
			t.Fatalf("endpoint: %v", err)
		}
		return e
	}
	acme := endpoint(h.authz.RevocationURL())
	h.broker, err = broker.New(broker.Options{
		Store:  st,
		Sealer: kr,
		Providers: map[string]broker.Provider{
			provAcme:   {Endpoint: acme, Policy: lifecycle.Policy{DefaultLifetime: time.Hour}, CanRevoke: true},
			provNoAPI:  {Endpoint: acme, Policy: lifecycle.Policy{DefaultLifetime: time.Hour}},
			provFlaky:  {Endpoint: endpoint(failingRevoke.URL), Policy: lifecycle.Policy{DefaultLifetime: time.Hour}, CanRevoke: true},
			provNoDflt: {Endpoint: acme},
		},
		Backoff: oauth.Backoff{Base: time.Second, Max: time.Minute},
		Now:     h.clock.Now,
		Rand:    func() float64 { return 0.5 },
		Logger:  log,
	})
	if err != nil {
		t.Fatalf("broker: %v", err)
	}

	h.upstream = newUpstream(t)
	base, _ := url.Parse(h.upstream.URL + "/api/v2")
	opts := Options{
		Broker: h.broker,
		Keys:   st,
		Targets: map[string]ProxyTarget{
			provAcme:   {BaseURL: base},
			provFlaky:  {BaseURL: base},
			provNoDflt: {BaseURL: base},
		},
		Ready:    st.Ping,
		Logger:   log,
		Now:      h.clock.Now,
		KeyAdmin: st,
	}
	if ho.noCache {
		opts.KeyCacheTTL = -1
	}
	if ho.server != nil {
		ho.server(&opts)
	}
	h.server, err = New(opts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	h.api = httptest.NewServer(h.server.Handler())
	t.Cleanup(h.api.Close)

	h.adminKey = h.newKey(ScopeAdmin)
	h.tokensKey = h.newKey(ScopeTokens)

	// Whatever a test did, no secret it knew of may be in the log.
	t.Cleanup(func() { h.assertNoSecretsLogged() })
	return h
}

// newScopedKey stores a key of spec and returns its secret.
func (h *harness) newScopedKey(spec KeySpec) string {
	h.t.Helper()
	secret, key, err := NewAPIKey(spec, h.clock.Now())
	if err != nil {
		h.t.Fatalf("NewAPIKey: %v", err)
	}
	if err := h.store.CreateAPIKey(h.t.Context(), key); err != nil {
		h.t.Fatalf("CreateAPIKey: %v", err)
	}
	h.tokens.add(secret)
	return secret
}

func (h *harness) newKey(scope string) string {
	h.t.Helper()
	secret, key, err := GenerateAPIKey("test "+scope, scope, h.clock.Now())
	if err != nil {
		h.t.Fatalf("GenerateAPIKey: %v", err)
	}
	if err := h.store.CreateAPIKey(h.t.Context(), key); err != nil {
		h.t.Fatalf("CreateAPIKey: %v", err)
	}
	h.tokens.add(secret) // checked against the log like a token
	return secret
}

// issue gets a real grant from the authorization server.
func (h *harness) issue() (access, refresh string) {
	h.t.Helper()
	access, refresh, _ = h.authz.IssueTokens(h.t, "read")
	h.tokens.add(access, refresh)
	return access, refresh
}

// importConn imports a fresh grant as connection id of provider prov and
// returns its access token.
func (h *harness) importConn(id, prov string, extra map[string]any) (access, refresh string) {
	h.t.Helper()
	access, refresh = h.issue()
	body := map[string]any{"id": id, "provider": prov, "access_token": access, "refresh_token": refresh, "expires_in": 3600}
	for k, v := range extra {
		body[k] = v
	}
	resp := h.do("POST", "/v1/connections", h.adminKey, body, nil)
	if resp.status != http.StatusCreated {
		h.t.Fatalf("import %s: status %d, body %s", id, resp.status, resp.body)
	}
	return access, refresh
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object (status %d, %d bytes)", r.status, len(r.body))
	}
	return m
}

// errCode returns error.code and error.message of an error answer.
func (r response) errCode(t *testing.T) (code, message string) {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error answer is not JSON (status %d)", r.status)
	}
	return e.Error.Code, e.Error.Message
}

// do sends a request to the API. body may be nil, a string or []byte (sent
// as is), or anything else (sent as JSON).
func (h *harness) do(method, path, key string, body any, header http.Header) response {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			h.t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(h.t.Context(), method, h.api.URL+path, rd)
	if err != nil {
		h.t.Fatalf("request: %v", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := h.api.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("read body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// serveRaw runs one request with an exact request URI through the handler.
func (h *harness) serveRaw(method, target, key string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(h.t.Context(), method, target, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	h.server.Handler().ServeHTTP(rec, req)
	return rec
}

// assertNoSecretsLogged fails the test if any token, refresh token or API
// key the test saw appears in any log record. Tokens are also checked by
// their dot-separated parts, so a log of half a token counts.
func (h *harness) assertNoSecretsLogged() {
	logs := h.logs.String()
	for _, s := range h.tokens.all() {
		needles := []string{s}
		for _, part := range strings.Split(s, ".") {
			if len(part) >= 16 && part != s {
				needles = append(needles, part)
			}
		}
		for _, n := range needles {
			if strings.Contains(logs, n) {
				h.t.Errorf("a secret (length %d) appears in the log", len(s))
			}
		}
	}
	if strings.Contains(logs, h.authz.ClientSecret) {
		h.t.Errorf("the client secret appears in the log")
	}
}

// containsAny reports whether body contains any of the secrets.
func containsAny(body []byte, secrets ...string) bool {
	for _, s := range secrets {
		if s != "" && bytes.Contains(body, []byte(s)) {
			return true
		}
	}
	return false
}
