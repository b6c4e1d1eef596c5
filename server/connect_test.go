package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

// connectHarness is the harness with the API also served at a public URL
// known before the server is built, and a browser.
type connectHarness struct {
	*harness
	public string // PublicURL
	app    *appSite
}

// appSite is the admin's application that redirect_url points at.
type appSite struct {
	*httptest.Server
	mu   sync.Mutex
	seen []url.Values
}

func (a *appSite) queries() []url.Values {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]url.Values(nil), a.seen...)
}

func newConnectHarness(t *testing.T) *connectHarness {
	t.Helper()
	return newConnectHarnessWith(t, harnessOptions{})
}

func newConnectHarnessWith(t *testing.T, ho harnessOptions) *connectHarness {
	t.Helper()
	var handler http.Handler
	pub := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	public := "http://" + pub.Listener.Addr().String()
	more := ho.server
	ho.server = func(o *Options) {
		o.PublicURL = public + "/"
		if more != nil {
			more(o)
		}
	}
	h := newHarness(t, ho)
	handler = h.server.Handler()
	pub.Start()
	t.Cleanup(pub.Close)
	h.authz.AddRedirectURI(public + callbackPath)

	app := &appSite{}
	app.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.mu.Lock()
		app.seen = append(app.seen, r.URL.Query())
		app.mu.Unlock()
		_, _ = io.WriteString(w, "app: done\n")
	}))
	t.Cleanup(app.Close)
	return &connectHarness{harness: h, public: public, app: app}
}

// session creates a connect session and returns its link.
func (ch *connectHarness) session(t *testing.T, body map[string]any) string {
	t.Helper()
	r := ch.do("POST", "/v1/connect-sessions", ch.adminKey, body, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("create connect session: status %d, body %s", r.status, r.body)
	}
	var v struct {
		ID        string    `json:"id"`
		URL       string    `json:"url"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatal(err)
	}
	if v.URL != ch.public+"/v1/connect/"+v.ID || len(v.ID) < 22 || !v.ExpiresAt.Equal(ch.clock.Now().Add(10*time.Minute)) {
		t.Errorf("session = {id of %d chars, url %q, expires in %v}", len(v.ID), v.URL, v.ExpiresAt.Sub(ch.clock.Now()))
	}
	return v.URL
}

type visit struct {
	status   int
	header   http.Header
	body     string
	finalURL *url.URL
	callback string // the callback URL the provider sent the browser to
}

// browse opens link in a browser (cookie jar, following redirects). With
// stopAtCallback it stops before the callback and returns its URL, so a
// test can change the world before the callback arrives.
func (ch *connectHarness) browse(t *testing.T, link string, stopAtCallback bool) visit {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	var callback string
	client := &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), ch.public+callbackPath) {
			callback = req.URL.String()
			if q := req.URL.Query(); q.Get("code") != "" {
				ch.tokens.add(q.Get("code"), q.Get("state")) // checked against the log
			}
			if stopAtCallback {
				return http.ErrUseLastResponse
			}
		}
		if len(via) > 10 {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := client.Get(link)
	if err != nil {
		t.Fatalf("browse: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return visit{status: resp.StatusCode, header: resp.Header, body: string(b), finalURL: resp.Request.URL, callback: callback}
}

func (v visit) isPage(t *testing.T, status int, words string) {
	t.Helper()
	if v.status != status || !strings.HasPrefix(v.header.Get("Content-Type"), "text/html") || !strings.Contains(v.body, words) {
		t.Errorf("page: status %d (want %d), type %q, contains %q: %t", v.status, status, v.header.Get("Content-Type"), words, strings.Contains(v.body, words))
	}
	if v.header.Get("Cache-Control") != "no-store" || v.header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("page headers: Cache-Control %q, Referrer-Policy %q", v.header.Get("Cache-Control"), v.header.Get("Referrer-Policy"))
	}
}

func (ch *connectHarness) get(t *testing.T, rawURL string) visit {
	t.Helper()
	resp, err := http.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return visit{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (ch *connectHarness) assertNoConnection(t *testing.T, id string) {
	t.Helper()
	if _, err := ch.store.GetConnection(context.Background(), id); err == nil {
		t.Errorf("connection %s was created", id)
	}
}

func TestConnectFlowEndToEnd(t *testing.T) {
	ch := newConnectHarness(t)
	link := ch.session(t, map[string]any{"connection_id": "c1", "provider": provAcme,
		"redirect_url": ch.app.URL + "/done?x=1", "scopes": []string{"read"}})

	v := ch.browse(t, link, false)
	if v.status != http.StatusOK || v.finalURL.Host != strings.TrimPrefix(ch.app.URL, "http://") {
		t.Fatalf("browser ended at %s with status %d", v.finalURL.Redacted(), v.status)
	}
	qs := ch.app.queries()
	if len(qs) != 1 || qs[0].Get("connection_id") != "c1" || qs[0].Get("status") != "connected" || qs[0].Get("x") != "1" ||
		qs[0].Has("code") || qs[0].Has("state") {
		t.Errorf("redirect_url got %v", qs)
	}

	r := ch.do("GET", "/v1/connections/c1", ch.adminKey, nil, nil)
	m := r.json(t)
	if r.status != http.StatusOK || m["status"] != "active" || m["has_refresh_token"] != true || m["provider"] != provAcme || m["scope"] != "read" {
		t.Errorf("connection: status %d, %v", r.status, m)
	}

	// Its token works through the proxy.
	pr := ch.do("GET", "/v1/proxy/c1/items?q=1", ch.tokensKey, nil, nil)
	calls := ch.upstream.calls()
	if pr.status != http.StatusOK || len(calls) != 1 {
		t.Fatalf("proxy: status %d, %d upstream calls", pr.status, len(calls))
	}
	tok, ok := strings.CutPrefix(calls[0].Header.Get("Authorization"), "Bearer ")
	if !ok || !ch.authz.Active(t, tok) {
		t.Errorf("the proxied call did not carry an active token of the new grant")
	}

	// Neither the callback nor the link can be used again.
	ch.get(t, v.callback).isPage(t, http.StatusNotFound, "already been used")
	ch.get(t, link).isPage(t, http.StatusNotFound, "not valid")
	if c, _ := ch.store.GetConnection(context.Background(), "c1"); c.Version != int64(m["version"].(float64)) {
		t.Errorf("a replay changed the connection")
	}
}

func TestConnectWithoutRedirectShowsPage(t *testing.T) {
	ch := newConnectHarness(t)
	link := ch.session(t, map[string]any{"connection_id": "plain", "provider": provAcme})
	v := ch.browse(t, link, false)
	v.isPage(t, http.StatusOK, "Connection plain to acme was created")
	if q, _ := url.ParseQuery(strings.SplitN(v.callback, "?", 2)[1]); strings.Contains(v.body, q.Get("code")) || strings.Contains(v.body, q.Get("state")) {
		t.Errorf("the page shows the code or the state")
	}
}

func TestConnectRestoresNeedsReauth(t *testing.T) {
	ch := newConnectHarness(t)
	old, _ := ch.importConn("dead", provAcme, map[string]any{"metadata": map[string]string{"tenant": "t1"}})
	if _, err := ch.store.UpdateConnection(context.Background(), "dead", func(c store.Connection) (store.Connection, []store.Event, error) {
		c.Status = store.StatusNeedsReauth
		c.Failure = &store.Failure{Code: "invalid_grant", Attempts: 3, FirstAt: ch.clock.Now()}
		return c, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if r := ch.do("GET", "/v1/connections/dead/token", ch.tokensKey, nil, nil); r.status != http.StatusConflict {
		t.Fatalf("needs_reauth token: status %d, want 409", r.status)
	}
	ch.browse(t, ch.session(t, map[string]any{"connection_id": "dead", "provider": provAcme}), false).
		isPage(t, http.StatusOK, "was reconnected")
	m := ch.do("GET", "/v1/connections/dead", ch.adminKey, nil, nil).json(t)
	if m["status"] != "active" || m["failure"] != nil || m["metadata"].(map[string]any)["tenant"] != "t1" {
		t.Errorf("after reconnect: %v", m)
	}
	r := ch.do("GET", "/v1/connections/dead/token", ch.tokensKey, nil, nil)
	tok, _ := r.json(t)["access_token"].(string)
	if r.status != http.StatusOK || tok == old || !ch.authz.Active(t, tok) {
		t.Errorf("token after reconnect: status %d, new %t", r.status, tok != old)
	}
}

func TestConnectFailures(t *testing.T) {
	ch := newConnectHarness(t)
	ctx := context.Background()

	t.Run("denied consent", func(t *testing.T) {
		ch.authz.DenyConsent(true)
		defer ch.authz.DenyConsent(false)
		link := ch.session(t, map[string]any{"connection_id": "denied", "provider": provAcme, "redirect_url": ch.app.URL + "/x"})
		ch.browse(t, link, false).isPage(t, http.StatusForbidden, "not granted")
		ch.assertNoConnection(t, "denied")
		ch.get(t, link).isPage(t, http.StatusNotFound, "not valid")
		if len(ch.app.queries()) != 0 {
			t.Errorf("a failure was redirected to redirect_url")
		}
	})
	t.Run("unknown state", func(t *testing.T) {
		ch.get(t, ch.public+callbackPath+"?state=made-up&code=x").isPage(t, http.StatusNotFound, "not valid")
	})
	t.Run("no state", func(t *testing.T) {
		ch.get(t, ch.public+callbackPath+"?code=x").isPage(t, http.StatusBadRequest, "no state")
	})
	t.Run("hostile error parameter", func(t *testing.T) {
		v := ch.get(t, ch.public+callbackPath+"?error="+url.QueryEscape("<script>alert(1)</script>"))
		v.isPage(t, http.StatusBadRequest, "provider_error")
		if strings.Contains(v.body, "<script>") {
			t.Errorf("the error parameter was reflected unescaped")
		}
	})
	t.Run("expired before opening", func(t *testing.T) {
		link := ch.session(t, map[string]any{"connection_id": "late1", "provider": provAcme})
		ch.clock.Advance(11 * time.Minute)
		ch.get(t, link).isPage(t, http.StatusGone, "expired")
		ch.assertNoConnection(t, "late1")
	})
	t.Run("expired before the callback", func(t *testing.T) {
		link := ch.session(t, map[string]any{"connection_id": "late2", "provider": provAcme})
		v := ch.browse(t, link, true)
		ch.clock.Advance(11 * time.Minute)
		ch.get(t, v.callback).isPage(t, http.StatusGone, "expired")
		ch.assertNoConnection(t, "late2")
		ch.get(t, v.callback).isPage(t, http.StatusNotFound, "not valid")
	})
	t.Run("token endpoint fails", func(t *testing.T) {
		for _, tc := range []struct {
			status int
			body   string
			want   int
		}{
			{http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`, http.StatusBadGateway},
			{http.StatusBadRequest, `{"error":"invalid_grant"}`, http.StatusBadRequest},
		} {
			link := ch.session(t, map[string]any{"connection_id": "tokfail", "provider": provAcme})
			v := ch.browse(t, link, true)
			ch.authz.FailNext(1, tc.status, http.Header{"Content-Type": {"application/json"}}, tc.body)
			ch.get(t, v.callback).isPage(t, tc.want, "did not issue a token")
			ch.assertNoConnection(t, "tokfail")
			ch.get(t, v.callback).isPage(t, http.StatusNotFound, "not valid")
		}
	})
	t.Run("provider mismatch", func(t *testing.T) {
		link := ch.session(t, map[string]any{"connection_id": "mine", "provider": provAcme})
		v := ch.browse(t, link, true)
		ch.importConn("mine", provNoAPI, nil)
		before, _ := ch.store.GetConnection(ctx, "mine")
		ch.get(t, v.callback).isPage(t, http.StatusConflict, "another provider")
		if after, _ := ch.store.GetConnection(ctx, "mine"); after.Version != before.Version || after.Provider != provNoAPI {
			t.Errorf("the other provider's connection was changed")
		}
	})
}

func TestCreateConnectSessionErrors(t *testing.T) {
	ch := newConnectHarness(t)
	ch.importConn("taken", provNoAPI, nil)
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
		words  string
	}{
		{"bad redirect", map[string]any{"connection_id": "a", "provider": provAcme, "redirect_url": "javascript:alert(1)"}, 400, codeInvalidRequest, "redirect_url"},
		{"relative redirect", map[string]any{"connection_id": "a", "provider": provAcme, "redirect_url": "/done"}, 400, codeInvalidRequest, "redirect_url"},
		{"unknown provider", map[string]any{"connection_id": "a", "provider": "nope"}, 400, codeInvalidRequest, "provider"},
		{"bad id", map[string]any{"connection_id": "a b", "provider": provAcme}, 400, codeInvalidRequest, "connection_id"},
		{"bad scope", map[string]any{"connection_id": "a", "provider": provAcme, "scopes": []string{"x\"y"}}, 400, codeInvalidRequest, "scopes"},
		{"unknown field", map[string]any{"connection_id": "a", "provider": provAcme, "state": "x"}, 400, codeInvalidRequest, "unknown field"},
		{"other provider's id", map[string]any{"connection_id": "taken", "provider": provAcme}, 409, codeAlreadyExists, "another provider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ch.do("POST", "/v1/connect-sessions", ch.adminKey, tc.body, nil)
			code, msg := r.errCode(t)
			if r.status != tc.status || code != tc.code || !strings.Contains(msg, tc.words) {
				t.Errorf("status %d code %q message %q; want %d %s mentioning %q", r.status, code, msg, tc.status, tc.code, tc.words)
			}
		})
	}

	// Without a public URL there is no flow.
	h := newHarness(t, harnessOptions{})
	if r := h.do("POST", "/v1/connect-sessions", h.adminKey, map[string]any{"connection_id": "a", "provider": provAcme}, nil); r.status != http.StatusNotFound {
		t.Errorf("without public_url: status %d, want 404", r.status)
	}
}

func TestClientCredentialsImport(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	r := h.do("POST", "/v1/connections", h.adminKey, map[string]any{"id": "svc", "provider": provAcme,
		"grant": "client_credentials", "scopes": []string{"read"}, "metadata": map[string]int{"n": 1}}, nil)
	m := r.json(t)
	if r.status != http.StatusCreated || m["grant"] != "client_credentials" || m["has_refresh_token"] != false || m["status"] != "active" || m["scope"] != "read" {
		t.Fatalf("create: status %d, %v", r.status, m)
	}
	tr := h.do("GET", "/v1/connections/svc/token", h.tokensKey, nil, nil)
	tok, _ := tr.json(t)["access_token"].(string)
	h.tokens.add(tok)
	if tr.status != http.StatusOK || !h.authz.Active(t, tok) {
		t.Errorf("token: status %d, active %t", tr.status, h.authz.Active(t, tok))
	}
	// Renewed when due, by asking again.
	h.clock.Advance(2 * time.Hour)
	tr = h.do("GET", "/v1/connections/svc/token", h.tokensKey, nil, nil)
	renewed, _ := tr.json(t)["access_token"].(string)
	h.tokens.add(renewed)
	if tr.status != http.StatusOK || renewed == tok || !h.authz.Active(t, renewed) {
		t.Errorf("renewal: status %d, new token %t", tr.status, renewed != tok)
	}

	for _, tc := range []struct {
		name  string
		body  map[string]any
		code  int
		words string
	}{
		{"with a token", map[string]any{"id": "x", "provider": provAcme, "grant": "client_credentials", "access_token": "fake-at"}, 400, "access_token"},
		{"with expiry", map[string]any{"id": "x", "provider": provAcme, "grant": "client_credentials", "expires_in": 60}, 400, "expires_in"},
		{"unknown grant", map[string]any{"id": "x", "provider": provAcme, "grant": "password"}, 400, "grant"},
		{"scopes without grant", map[string]any{"id": "x", "provider": provAcme, "access_token": "fake-at", "scopes": []string{"a"}}, 400, "scopes"},
		{"taken id", map[string]any{"id": "svc", "provider": provAcme, "grant": "client_credentials"}, 409, "exists"},
		{"unknown provider", map[string]any{"id": "x", "provider": "nope", "grant": "client_credentials"}, 400, "provider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do("POST", "/v1/connections", h.adminKey, tc.body, nil)
			_, msg := r.errCode(t)
			if r.status != tc.code || !strings.Contains(msg, tc.words) {
				t.Errorf("status %d message %q; want %d mentioning %q", r.status, msg, tc.code, tc.words)
			}
		})
	}
	if _, err := h.store.GetConnection(context.Background(), "x"); err == nil {
		t.Errorf("a refused request created a connection")
	}
}
