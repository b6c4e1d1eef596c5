package ui_test

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/server/ui"
	"github.com/tokenbroker/tokenbroker/store"
)

// signInRaw signs in through the handler directly (so the request's TLS
// and headers are the test's choice) and returns the session cookie.
func signInRaw(t *testing.T, h *harness, mutate func(*http.Request)) *http.Cookie {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://tb.example/ui/signin", nil)
	mutate(req)
	rec := httptest.NewRecorder()
	h.ui.ServeHTTP(rec, req)
	pre := cookieNamed(rec.Result().Cookies(), "tokenbroker_signin")
	if pre == nil {
		t.Fatal("no pre-session cookie")
	}
	tok := csrfRe.FindStringSubmatch(rec.Body.String())[1]
	form := url.Values{"csrf": {tok}, "api_key": {h.adminKey}}
	req = httptest.NewRequest(http.MethodPost, "http://tb.example/ui/signin", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://tb.example")
	req.AddCookie(&http.Cookie{Name: pre.Name, Value: pre.Value})
	mutate(req)
	rec = httptest.NewRecorder()
	h.ui.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("sign-in status %d", rec.Code)
	}
	c := cookieNamed(rec.Result().Cookies(), "tokenbroker_session")
	if c == nil {
		t.Fatal("no session cookie")
	}
	return c
}

// TestSecureCookieBehindTLSProxy: behind a TLS-terminating proxy the
// request arrives as plain http, yet the cookie is Secure when the public
// URL is https, or when a trusted proxy header says https; an untrusted
// header changes nothing.
func TestSecureCookieBehindTLSProxy(t *testing.T) {
	forwarded := func(r *http.Request) { r.Header.Set("X-Forwarded-Proto", "https") }
	none := func(*http.Request) {}
	for _, c := range []struct {
		name   string
		opts   func(*ui.Options)
		req    func(*http.Request)
		secure bool
	}{
		{"plain http, nothing configured", nil, none, false},
		{"https public URL", func(o *ui.Options) { o.SecureCookies = true }, none, true},
		{"trusted forwarded proto", func(o *ui.Options) { o.TrustForwardedProto = true }, forwarded, true},
		{"trusted, but plain http", func(o *ui.Options) { o.TrustForwardedProto = true }, none, false},
		{"untrusted forwarded proto", nil, forwarded, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{ui: c.opts})
			cookie := signInRaw(t, h, c.req)
			if cookie.Secure != c.secure {
				t.Errorf("session cookie Secure = %v, want %v", cookie.Secure, c.secure)
			}
		})
	}
}

// TestSignOutEndsCopiedCookie: after sign-out, a copy of the session cookie
// taken before it no longer works: the session ended server-side.
func TestSignOutEndsCopiedCookie(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	tok := b.signIn(h.adminKey)
	u := mustURL(h.srv.URL + "/ui/")
	var copied *http.Cookie
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == "tokenbroker_session" {
			copied = c
		}
	}
	if copied == nil {
		t.Fatal("no session cookie in the browser")
	}
	useCopy := func() int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, h.srv.URL+"/ui/", nil)
		req.AddCookie(&http.Cookie{Name: copied.Name, Value: copied.Value})
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := useCopy(); s != http.StatusOK {
		t.Fatalf("copied cookie before sign-out: status %d, want 200", s)
	}
	if p := b.post("/ui/signout", url.Values{"csrf": {tok}}, nil); p.status != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", p.status)
	}
	if s := useCopy(); s != http.StatusSeeOther {
		t.Errorf("copied cookie after sign-out: status %d, want 303 to sign in", s)
	}
}

// TestKeyRevocationEndsSessions: sessions of a key end when the key's
// sessions are deleted (apikey revoke does it) and when the key is revoked.
func TestKeyRevocationEndsSessions(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	b.signIn(h.adminKey)
	if p := b.get("/ui/"); p.status != http.StatusOK {
		t.Fatalf("signed in: %d", p.status)
	}
	if n, err := h.store.DeleteKeyUISessions(t.Context(), h.adminID); err != nil || n != 1 {
		t.Fatalf("DeleteKeyUISessions = %d, %v; want 1", n, err)
	}
	if p := b.get("/ui/"); p.status != http.StatusSeeOther {
		t.Errorf("after the key's sessions ended: status %d, want 303", p.status)
	}
}

type memAudit struct {
	mu      sync.Mutex
	entries []store.AuditEntry
}

func (m *memAudit) Record(e store.AuditEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries = append(m.entries, e)
}

// TestDashboardAudit: sign-in, refresh, delete and sign-out are recorded
// under the dashboard's actor, and a connection's page shows its trail.
func TestDashboardAudit(t *testing.T) {
	rec := &memAudit{}
	h := newHarness(t, harnessOptions{ui: func(o *ui.Options) {
		o.Audit = rec
		o.AuditReader = o.Keys.(store.AuditLog)
	}})
	h.importConnection("alice", "acme")
	if err := h.store.AppendAudit(t.Context(), []store.AuditEntry{{Actor: "billing-service", Action: "token.read", ConnectionID: "alice", Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	b := h.browser()
	tok := b.signIn(h.adminKey)
	p := b.get("/ui/connections/alice")
	mustContain(t, "detail page", p.body, "Audit trail", "billing-service", "token.read")
	b.post("/ui/connections/alice/refresh", url.Values{"csrf": {tok}}, nil)
	b.post("/ui/signout", url.Values{"csrf": {tok}}, nil)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var got []string
	for _, e := range rec.entries {
		got = append(got, e.Actor+" "+e.Action+" "+e.ConnectionID+" "+e.Outcome)
	}
	want := []string{"dashboard:test admin dashboard.signin  ok", "dashboard:test admin refresh alice ok", "dashboard:test admin dashboard.signout  ok"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("recorded %q, want %q", got, want)
	}
}

var secretRe = regexp.MustCompile(`id="new-key-secret">(tbk_[A-Za-z0-9_-]+)<`)

// TestKeysPage: the dashboard creates a scoped key, shows its secret once,
// lists it, and revokes it, ending its sessions; each change is recorded.
func TestKeysPage(t *testing.T) {
	rec := &memAudit{}
	h := newHarness(t, harnessOptions{ui: func(o *ui.Options) {
		o.Audit = rec
		o.KeyAdmin = o.Keys.(ui.KeyAdmin)
		o.MakeKey = func(name, role string, conns, provs []string, now time.Time) (string, store.APIKey, error) {
			return server.NewAPIKey(server.KeySpec{Name: name, Role: role, Connections: conns, Providers: provs}, now)
		}
	}})
	b := h.browser()
	tok := b.signIn(h.adminKey)
	p := b.post("/ui/keys", url.Values{"csrf": {tok}, "name": {"svc-a"}, "role": {"proxy"}, "connections": {"team-a-*, shared"}, "providers": {"acme"}}, nil)
	m := secretRe.FindStringSubmatch(p.body)
	if p.status != http.StatusCreated || m == nil {
		t.Fatalf("create: status %d, secret shown: %v", p.status, m != nil)
	}
	keys, err := h.store.ListAPIKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var created store.APIKey
	for _, k := range keys {
		if k.Name == "svc-a" {
			created = k
		}
	}
	if created.Scope != "proxy" || strings.Join(created.Connections, ",") != "team-a-*,shared" || strings.Join(created.Providers, ",") != "acme" {
		t.Fatalf("stored key %+v", created)
	}
	list := b.get("/ui/keys")
	mustContain(t, "keys page", list.body, "svc-a", "team-a-*, shared", created.ID)
	if strings.Contains(list.body, m[1]) {
		t.Errorf("the secret is shown again on the list")
	}
	if p := b.post("/ui/keys", url.Values{"csrf": {tok}, "name": {"bad"}, "role": {"admin"}, "connections": {"x-*"}}, nil); p.status != http.StatusBadRequest ||
		!strings.Contains(p.body, "cannot be limited") {
		t.Errorf("scoped admin key: status %d", p.status)
	}
	if p := b.post("/ui/keys/"+created.ID+"/revoke", url.Values{"csrf": {tok}}, nil); p.status != http.StatusSeeOther {
		t.Fatalf("revoke: %d", p.status)
	}
	if _, err := h.store.GetAPIKeyByHash(t.Context(), sha(m[1])); err == nil {
		t.Errorf("the revoked key still resolves")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var got []string
	for _, e := range rec.entries {
		got = append(got, e.Action)
		if strings.Contains(e.Detail, m[1]) {
			t.Errorf("an audit entry holds the secret")
		}
	}
	if !strings.Contains(strings.Join(got, ","), "apikey.create,apikey.revoke") {
		t.Errorf("recorded %q", got)
	}
}

func sha(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}
