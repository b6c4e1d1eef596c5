package ui_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/server/ui"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

// harness is the dashboard on real parts: SQLite, the key ring, a broker
// whose provider is a fosite authorization server.
type harness struct {
	t     *testing.T
	clock *fakeclock.Clock
	store *sqlite.Store
	ring  *seal.KeyRing
	// sessionRing derives the dashboard's session keys; a test swaps it.
	sessionRing atomic.Pointer[seal.KeyRing]
	broker      *broker.Broker
	authz       *authztest.Server
	ui          *ui.Handler
	srv         *httptest.Server
	adminKey    string
	adminID     string
	tokens      []string // every token value the test created, to prove none is rendered
}

type harnessOptions struct {
	ui  func(*ui.Options)
	tls bool
}

func newHarness(t *testing.T, ho harnessOptions) *harness {
	t.Helper()
	ctx := t.Context()
	// The clock starts at the wall clock because fosite reads the wall clock.
	h := &harness{t: t, clock: fakeclock.New(time.Now().UTC().Truncate(time.Second))}
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "tb.db"), sqlite.Options{Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h.store = st
	if h.ring, _, err = seal.LoadOrCreate(filepath.Join(dir, "keys")); err != nil {
		t.Fatal(err)
	}
	h.sessionRing.Store(h.ring)
	h.authz = authztest.New(t, authztest.Options{AccessTokenLifespan: time.Hour})
	ep, err := oauth.NewEndpoint(oauth.Config{
		ClientID:     h.authz.ClientID,
		ClientSecret: h.authz.ClientSecret,
		TokenURL:     h.authz.TokenURL(),
		Retry:        oauth.Backoff{MaxAttempts: 1},
		HTTPClient:   &http.Client{Timeout: 10 * time.Second},
		Now:          h.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.broker, err = broker.New(broker.Options{
		Store:     st,
		Sealer:    h.ring,
		Providers: map[string]broker.Provider{"acme": {Endpoint: ep, Policy: lifecycle.Policy{DefaultLifetime: time.Hour}}, "globex": {Endpoint: ep, Policy: lifecycle.Policy{DefaultLifetime: time.Hour}}},
		Backoff:   oauth.Backoff{Base: time.Second, Max: time.Minute},
		Now:       h.clock.Now,
		Rand:      func() float64 { return 0.5 },
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := ui.Options{
		Broker:      h.broker,
		Keys:        st,
		SessionKeys: func() [][]byte { return h.sessionRing.Load().DeriveKeys(ui.SessionKeyPurpose) },
		Providers:   []string{"acme", "globex"},
		Now:         h.clock.Now,
	}
	if ho.ui != nil {
		ho.ui(&opts)
	}
	if h.ui, err = ui.New(opts); err != nil {
		t.Fatal(err)
	}
	if ho.tls {
		h.srv = httptest.NewTLSServer(h.ui)
	} else {
		h.srv = httptest.NewServer(h.ui)
	}
	t.Cleanup(h.srv.Close)
	h.adminKey, h.adminID = h.newKey(server.ScopeAdmin)
	return h
}

func (h *harness) newKey(scope string) (secret, id string) {
	h.t.Helper()
	secret, key, err := server.GenerateAPIKey("test "+scope, scope, h.clock.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.store.CreateAPIKey(h.t.Context(), key); err != nil {
		h.t.Fatal(err)
	}
	return secret, key.ID
}

// importConnection creates a connection with real tokens from the
// authorization server.
func (h *harness) importConnection(id, provider string) {
	h.t.Helper()
	access, refresh, _ := h.authz.IssueTokens(h.t, "offline")
	h.tokens = append(h.tokens, access, refresh)
	if _, err := h.broker.CreateConnection(h.t.Context(), broker.Import{
		ID: id, Provider: provider, AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour,
	}); err != nil {
		h.t.Fatal(err)
	}
}

// setState writes a status and failure record directly, as a refresh
// elsewhere would have.
func (h *harness) setState(id string, status store.Status, f *store.Failure) {
	h.t.Helper()
	if _, err := h.store.UpdateConnection(h.t.Context(), id, func(c store.Connection) (store.Connection, []store.Event, error) {
		c.Status, c.Failure = status, f
		return c, nil, nil
	}); err != nil {
		h.t.Fatal(err)
	}
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see them.
type browser struct {
	h      *harness
	client *http.Client
	origin string
}

func (h *harness) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{
		Transport:     h.srv.Client().Transport, // trusts the TLS server's certificate
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
	return &browser{h: h, client: c, origin: h.srv.URL}
}

type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(req *http.Request) page {
	b.h.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p := page{status: resp.StatusCode, header: resp.Header, body: string(body)}
	b.h.assertNoTokens(p.body)
	return p
}

func (b *browser) get(path string) page {
	b.h.t.Helper()
	req, _ := http.NewRequestWithContext(b.h.t.Context(), http.MethodGet, b.h.srv.URL+path, nil)
	return b.do(req)
}

// post submits a form as a browser on this origin would, unless header
// overrides say otherwise.
func (b *browser) post(path string, form url.Values, header http.Header) page {
	b.h.t.Helper()
	req, _ := http.NewRequestWithContext(b.h.t.Context(), http.MethodPost, b.h.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.origin)
	for k, v := range header {
		req.Header[k] = v
	}
	return b.do(req)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func formToken(t *testing.T, p page) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no form token on the page (status %d)", p.status)
	}
	return m[1]
}

// signIn signs in with key and returns the form token of the session.
func (b *browser) signIn(key string) string {
	b.h.t.Helper()
	tok := formToken(b.h.t, b.get("/ui/signin"))
	p := b.post("/ui/signin", url.Values{"csrf": {tok}, "api_key": {key}}, nil)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/" {
		b.h.t.Fatalf("sign-in: status %d to %q", p.status, p.header.Get("Location"))
	}
	return formToken(b.h.t, b.get("/ui/"))
}

// assertNoTokens fails the test if a page holds a token value or the API key.
func (h *harness) assertNoTokens(body string) {
	h.t.Helper()
	for _, tok := range append([]string{h.adminKey}, h.tokens...) {
		if tok != "" && strings.Contains(body, tok) {
			h.t.Fatalf("a secret (%d bytes) was rendered into a page", len(tok))
		}
	}
}

func cookieNamed(cs []*http.Cookie, name string) *http.Cookie {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// fakeReconnect hands out a fixed link.
type fakeReconnect struct {
	link string
	exp  time.Time
	err  error
	ids  []string
}

func (f *fakeReconnect) ReconnectLink(_ context.Context, id string) (string, time.Time, error) {
	f.ids = append(f.ids, id)
	return f.link, f.exp, f.err
}

// fakeEvents is a fixed history.
type fakeEvents map[string][]ui.Event

func (f fakeEvents) ConnectionEvents(_ context.Context, id string, limit int) ([]ui.Event, error) {
	evs := f[id]
	if len(evs) > limit {
		evs = evs[:limit]
	}
	return evs, nil
}

func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s does not contain %q", what, w)
		}
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// mustNewRing is a key ring with one fresh key, as after a rotation that
// dropped the old key.
func mustNewRing(t *testing.T) *seal.KeyRing {
	t.Helper()
	r, _, err := seal.LoadOrCreate(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}
