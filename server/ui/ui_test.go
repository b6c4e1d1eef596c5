package ui_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/server/ui"
	"github.com/tokenbroker/tokenbroker/store"
)

func TestSignIn(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tokensKey, _ := h.newKey(server.ScopeTokens)
	revokedKey, revokedID := h.newKey(server.ScopeAdmin)
	if err := h.store.RevokeAPIKey(t.Context(), revokedID); err != nil {
		t.Fatal(err)
	}
	unknown, _, _ := server.GenerateAPIKey("never stored", server.ScopeAdmin, h.clock.Now())

	tests := []struct {
		name       string
		key        string
		noToken    bool
		header     http.Header
		wantStatus int
		wantText   string
	}{
		{name: "admin key", key: h.adminKey, wantStatus: http.StatusSeeOther},
		{name: "admin key with spaces", key: "  " + h.adminKey + "\n", wantStatus: http.StatusSeeOther},
		{name: "tokens key", key: tokensKey, wantStatus: http.StatusForbidden, wantText: "Only admin API keys"},
		{name: "revoked key", key: revokedKey, wantStatus: http.StatusUnauthorized, wantText: "not valid"},
		{name: "unknown key", key: unknown, wantStatus: http.StatusUnauthorized, wantText: "not valid"},
		{name: "not an API key", key: "hunter2", wantStatus: http.StatusUnauthorized, wantText: "start with tbk_"},
		{name: "empty", key: "", wantStatus: http.StatusBadRequest, wantText: "Enter an admin API key"},
		{name: "no form token", key: h.adminKey, noToken: true, wantStatus: http.StatusForbidden, wantText: "expired"},
		{name: "cross-origin", key: h.adminKey, header: http.Header{"Origin": {"https://evil.example"}}, wantStatus: http.StatusForbidden, wantText: "cross-origin"},
		{name: "cross-site fetch", key: h.adminKey, header: http.Header{"Sec-Fetch-Site": {"cross-site"}}, wantStatus: http.StatusForbidden, wantText: "cross-origin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := h.browser()
			form := url.Values{"api_key": {tc.key}}
			if !tc.noToken {
				form.Set("csrf", formToken(t, b.get("/ui/signin")))
			}
			p := b.post("/ui/signin", form, tc.header)
			if p.status != tc.wantStatus {
				t.Fatalf("status %d, want %d", p.status, tc.wantStatus)
			}
			session := cookieNamed(b.client.Jar.Cookies(mustURL(h.srv.URL+"/ui/")), "tokenbroker_session")
			if tc.wantStatus == http.StatusSeeOther {
				if session == nil {
					t.Fatal("no session cookie after a successful sign-in")
				}
				if list := b.get("/ui/"); list.status != http.StatusOK || !strings.Contains(list.body, "Connections") {
					t.Errorf("after sign-in the list answered %d", list.status)
				}
				return
			}
			if session != nil {
				t.Error("a refused sign-in set a session cookie")
			}
			mustContain(t, "the refusal", p.body, tc.wantText)
			if strings.TrimSpace(tc.key) != "" && strings.Contains(p.body, strings.TrimSpace(tc.key)) {
				t.Error("the refused key was echoed into the page")
			}
		})
	}
}

// TestSignInNext: after signing in the browser returns to the page it asked
// for, and only ever to a dashboard page.
func TestSignInNext(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConnection("alice", "acme")
	b := h.browser()
	p := b.get("/ui/connections/alice")
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/signin?next=%2Fui%2Fconnections%2Falice" {
		t.Fatalf("without a session: status %d to %q", p.status, p.header.Get("Location"))
	}
	for _, tc := range []struct{ next, want string }{
		{"/ui/connections/alice", "/ui/connections/alice"},
		{"https://evil.example/", "/ui/"},
		{"//evil.example/ui/", "/ui/"},
		{"/ui/..//evil.example", "/ui/"},
		{"/ui/\\evil.example", "/ui/"},
	} {
		b := h.browser()
		tok := formToken(t, b.get("/ui/signin?next="+url.QueryEscape(tc.next)))
		p := b.post("/ui/signin", url.Values{"csrf": {tok}, "api_key": {h.adminKey}, "next": {tc.next}}, nil)
		if got := p.header.Get("Location"); p.status != http.StatusSeeOther || got != tc.want {
			t.Errorf("next %q: status %d to %q, want %q", tc.next, p.status, got, tc.want)
		}
	}
}

func TestCookieFlags(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		h := newHarness(t, harnessOptions{})
		signin := httptest.NewRequest(http.MethodGet, "http://tb.example/ui/signin", nil)
		if overTLS {
			signin.TLS = &tls.ConnectionState{}
		}
		rec := httptest.NewRecorder()
		h.ui.ServeHTTP(rec, signin)
		pre := cookieNamed(rec.Result().Cookies(), "tokenbroker_signin")
		if pre == nil {
			t.Fatal("the sign-in page set no pre-session cookie")
		}
		tok := csrfRe.FindStringSubmatch(rec.Body.String())[1]

		form := url.Values{"csrf": {tok}, "api_key": {h.adminKey}}
		req := httptest.NewRequest(http.MethodPost, "http://tb.example/ui/signin", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "http://tb.example")
		req.AddCookie(&http.Cookie{Name: pre.Name, Value: pre.Value})
		if overTLS {
			req.TLS = &tls.ConnectionState{}
		}
		rec = httptest.NewRecorder()
		h.ui.ServeHTTP(rec, req)
		if rec.Code != http.StatusSeeOther {
			t.Fatalf("TLS %v: sign-in status %d", overTLS, rec.Code)
		}
		c := cookieNamed(rec.Result().Cookies(), "tokenbroker_session")
		if c == nil {
			t.Fatalf("TLS %v: no session cookie", overTLS)
		}
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/ui" || c.Secure != overTLS {
			t.Errorf("TLS %v: cookie HttpOnly=%v SameSite=%v Path=%q Secure=%v", overTLS, c.HttpOnly, c.SameSite, c.Path, c.Secure)
		}
		if c.MaxAge != int((12*time.Hour)/time.Second) || !c.Expires.Equal(h.clock.Now().Add(12*time.Hour).Truncate(time.Second)) {
			t.Errorf("TLS %v: cookie MaxAge %d, Expires %v; want 12h", overTLS, c.MaxAge, c.Expires)
		}
		if strings.Contains(c.Value, h.adminKey) || strings.Contains(c.Value, h.adminID) {
			t.Errorf("TLS %v: the cookie carries the key or its id in the clear", overTLS)
		}
		if pre := cookieNamed(rec.Result().Cookies(), "tokenbroker_signin"); pre == nil || pre.MaxAge >= 0 {
			t.Errorf("TLS %v: the pre-session cookie was not cleared", overTLS)
		}
	}
}

func TestCSRF(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConnection("alice", "acme")
	b := h.browser()
	tok := b.signIn(h.adminKey)
	other := h.browser()
	otherTok := other.signIn(h.adminKey)
	if otherTok == tok {
		t.Fatal("two sessions got the same form token")
	}

	tests := []struct {
		name   string
		form   url.Values
		header http.Header
		want   int
	}{
		{"no token", url.Values{}, nil, http.StatusForbidden},
		{"empty token", url.Values{"csrf": {""}}, nil, http.StatusForbidden},
		{"wrong token", url.Values{"csrf": {"AAAA" + tok[4:]}}, nil, http.StatusForbidden},
		{"another session's token", url.Values{"csrf": {otherTok}}, nil, http.StatusForbidden},
		{"wrong origin", url.Values{"csrf": {tok}}, http.Header{"Origin": {"https://evil.example"}}, http.StatusForbidden},
		{"null origin", url.Values{"csrf": {tok}}, http.Header{"Origin": {"null"}}, http.StatusForbidden},
		{"same-site fetch", url.Values{"csrf": {tok}}, http.Header{"Sec-Fetch-Site": {"same-site"}}, http.StatusForbidden},
		{"no origin, foreign referer", url.Values{"csrf": {tok}}, http.Header{"Origin": {""}, "Referer": {"https://evil.example/x"}}, http.StatusForbidden},
		{"no origin, no referer", url.Values{"csrf": {tok}}, http.Header{"Origin": {""}}, http.StatusForbidden},
		{"no origin, own referer", url.Values{"csrf": {tok}}, http.Header{"Origin": {""}, "Referer": {h.srv.URL + "/ui/connections/alice"}}, http.StatusSeeOther},
		{"token and origin", url.Values{"csrf": {tok}}, http.Header{"Sec-Fetch-Site": {"same-origin"}}, http.StatusSeeOther},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := h.authz.RefreshCalls()
			p := b.post("/ui/connections/alice/refresh", tc.form, tc.header)
			if p.status != tc.want {
				t.Fatalf("status %d, want %d", p.status, tc.want)
			}
			refreshed := h.authz.RefreshCalls() > calls
			if refreshed != (tc.want == http.StatusSeeOther) {
				t.Errorf("provider called: %v", refreshed)
			}
		})
	}
	// Every form is protected, not just refresh: delete and sign-out too.
	for _, path := range []string{"/ui/connections/alice/delete", "/ui/signout", "/ui/connections/alice/reconnect"} {
		if p := b.post(path, url.Values{"confirm": {"alice"}}, nil); p.status != http.StatusForbidden {
			t.Errorf("POST %s without a token: status %d, want 403", path, p.status)
		}
	}
	if _, err := h.store.GetConnection(t.Context(), "alice"); err != nil {
		t.Errorf("the connection is gone after a forged delete: %v", err)
	}
}

func TestSessionEnds(t *testing.T) {
	tests := []struct {
		name string
		end  func(h *harness)
	}{
		{"key revoked", func(h *harness) {
			if err := h.store.RevokeAPIKey(h.t.Context(), h.adminID); err != nil {
				h.t.Fatal(err)
			}
		}},
		{"expired", func(h *harness) { h.clock.Advance(12*time.Hour + time.Second) }},
		{"signing key removed", func(h *harness) {
			h.sessionRing.Store(mustNewRing(h.t)) // a ring without the key the cookie was signed under
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			b := h.browser()
			tok := b.signIn(h.adminKey)
			h.clock.Advance(11 * time.Hour)
			if p := b.get("/ui/"); p.status != http.StatusOK {
				t.Fatalf("inside the session: status %d", p.status)
			}
			tc.end(h)
			p := b.get("/ui/")
			if p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/ui/signin") {
				t.Errorf("GET after the session ended: status %d to %q, want a redirect to sign in", p.status, p.header.Get("Location"))
			}
			if c := cookieNamed(b.client.Jar.Cookies(mustURL(h.srv.URL+"/ui/")), "tokenbroker_session"); c != nil {
				t.Error("the dead session cookie was not cleared")
			}
			// A form posted after it ended is refused too.
			if p := b.post("/ui/connections/x/refresh", url.Values{"csrf": {tok}}, nil); p.status != http.StatusUnauthorized {
				t.Errorf("POST after the session ended: status %d, want 401", p.status)
			}
		})
	}
}

// TestSessionSurvivesRotation: a rotation adds a primary key; cookies made
// under the old one stay valid while it is in the ring.
func TestSessionSurvivesRotation(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	b.signIn(h.adminKey)
	old := h.ring.DeriveKeys(ui.SessionKeyPurpose)[0]
	rotated := mustNewRing(t).DeriveKeys(ui.SessionKeyPurpose)[0]
	handler, err := ui.New(ui.Options{
		Broker: h.broker, Keys: h.store, Now: h.clock.Now,
		SessionKeys: func() [][]byte { return [][]byte{rotated, old} },
	})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/ui/", nil)
	for _, c := range b.client.Jar.Cookies(mustURL(h.srv.URL + "/ui/")) {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("a cookie signed under the previous primary: status %d, want 200", rec.Code)
	}
}

func TestTamperedCookie(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, otherID := h.newKey(server.ScopeAdmin)
	b := h.browser()
	b.signIn(h.adminKey)
	c := cookieNamed(b.client.Jar.Cookies(mustURL(h.srv.URL+"/ui/")), "tokenbroker_session")
	parts := strings.Split(c.Value, ".")
	if len(parts) != 5 {
		t.Fatalf("cookie has %d parts", len(parts))
	}
	swapped := append([]string(nil), parts...)
	swapped[1] = b64(otherID)
	longer := append([]string(nil), parts...)
	longer[2] = "99999999999"
	for name, v := range map[string]string{
		"other key id":   strings.Join(swapped, "."),
		"later expiry":   strings.Join(longer, "."),
		"no signature":   strings.Join(parts[:4], "."),
		"garbage":        "not-a-cookie",
		"empty":          "",
		"huge":           strings.Repeat("a", 5000),
		"signature only": parts[4],
	} {
		req := httptest.NewRequest(http.MethodGet, "/ui/", nil)
		req.AddCookie(&http.Cookie{Name: "tokenbroker_session", Value: v})
		rec := httptest.NewRecorder()
		h.ui.ServeHTTP(rec, req)
		if rec.Code != http.StatusSeeOther {
			t.Errorf("%s: status %d, want 303 to sign in", name, rec.Code)
		}
	}
}

func TestListConnections(t *testing.T) {
	h := newHarness(t, harnessOptions{ui: func(o *ui.Options) { o.PageSize = 3 }})
	b := h.browser()
	if p := b.get("/ui/"); p.status != http.StatusSeeOther {
		t.Fatalf("list without a session: status %d", p.status)
	}
	b.signIn(h.adminKey)
	empty := b.get("/ui/")
	mustContain(t, "the empty list", empty.body, "No connections yet")

	h.importConnection("a-active", "acme")
	h.importConnection("b-failing", "acme")
	h.importConnection("c-reauth", "globex")
	h.importConnection("d-revoked", "globex")
	now := h.clock.Now()
	h.setState("b-failing", store.StatusActive, &store.Failure{Code: "http_503", Message: "upstream down", Attempts: 3, FirstAt: now, NextAttemptAt: now.Add(time.Minute)})
	h.setState("c-reauth", store.StatusNeedsReauth, &store.Failure{Code: "invalid_grant", Message: "grant revoked by user", Attempts: 1, FirstAt: now})
	h.setState("d-revoked", store.StatusRevoked, nil)

	p := b.get("/ui/")
	if p.status != http.StatusOK {
		t.Fatalf("list: status %d", p.status)
	}
	for _, want := range []struct{ id, class, label string }{
		{"a-active", "ok", "Active"},
		{"b-failing", "failing", "Failing"},
		{"c-reauth", "reauth", "Needs reauth"},
	} {
		row := rowOf(t, p.body, want.id)
		mustContain(t, "row "+want.id, row, `data-status="`+want.class+`"`, `badge-`+want.class+`"`, ">"+want.label+"<")
	}
	mustContain(t, "row b-failing", rowOf(t, p.body, "b-failing"), "http_503", "×3")
	mustContain(t, "row c-reauth", rowOf(t, p.body, "c-reauth"), "invalid_grant")
	if strings.Contains(p.body, "upstream down") {
		t.Error("the provider's message is on the list page; it belongs on the detail page")
	}
	if strings.Contains(p.body, `data-id="d-revoked"`) {
		t.Error("page 1 of 3 rows shows a fourth")
	}
	mustContain(t, "page 1", p.body, `href="/ui/?after=c-reauth"`)
	p2 := b.get("/ui/?after=c-reauth")
	mustContain(t, "page 2", rowOf(t, p2.body, "d-revoked"), "badge-revoked", ">Revoked<")
	mustContain(t, "page 2", p2.body, "First page")
	if strings.Contains(p2.body, "Next page") {
		t.Error("the last page links to a next page")
	}

	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"?status=needs_reauth", []string{"c-reauth"}},
		{"?provider=globex", []string{"c-reauth", "d-revoked"}},
		{"?provider=acme&status=active", []string{"a-active", "b-failing"}},
		{"?status=failing", []string{"b-failing"}},
		{"?status=failing&provider=globex", nil},
		{"?provider=nobody", nil},
	} {
		p := b.get("/ui/" + tc.query)
		for _, id := range []string{"a-active", "b-failing", "c-reauth", "d-revoked"} {
			shown := strings.Contains(p.body, `data-id="`+id+`"`)
			wanted := false
			for _, w := range tc.want {
				wanted = wanted || w == id
			}
			if shown != wanted {
				t.Errorf("%s: %s shown %v, want %v", tc.query, id, shown, wanted)
			}
		}
		if tc.want == nil {
			mustContain(t, "an empty filter", p.body, "No connections match")
		}
	}
	if p := b.get("/ui/?status=bogus"); p.status != http.StatusOK || !strings.Contains(p.body, "Unknown status filter") {
		t.Errorf("bogus status filter: status %d", p.status)
	}
}

func rowOf(t *testing.T, body, id string) string {
	t.Helper()
	i := strings.Index(body, `<tr data-id="`+id+`"`)
	if i < 0 {
		t.Fatalf("no row for %s", id)
	}
	j := strings.Index(body[i:], "</tr>")
	return body[i : i+j]
}

func TestDetail(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	rc := &fakeReconnect{link: "https://tb.example/connect/s/abc123", exp: at}
	h := newHarness(t, harnessOptions{ui: func(o *ui.Options) {
		o.Reconnect = rc
		o.Events = fakeEvents{"c-reauth": {{Type: "connection.reauth_required", Code: "invalid_grant", At: at}}}
	}})
	h.importConnection("a-active", "acme")
	h.importConnection("c-reauth", "globex")
	now := h.clock.Now()
	h.setState("c-reauth", store.StatusNeedsReauth, &store.Failure{Code: "invalid_grant", Message: "grant <b>revoked</b> by user", Attempts: 1, FirstAt: now})
	b := h.browser()
	tok := b.signIn(h.adminKey)

	p := b.get("/ui/connections/c-reauth")
	if p.status != http.StatusOK {
		t.Fatalf("detail: status %d", p.status)
	}
	mustContain(t, "the detail page", p.body,
		`id="status"`, "Needs reauth", "invalid_grant",
		"grant &lt;b&gt;revoked&lt;/b&gt; by user", // admin sees the message, escaped
		"connection.reauth_required", "Refresh now", "Create reconnect link", "Delete…",
		"Access token expires", "Refresh token expires", "Last refresh")
	if strings.Contains(between(p.body, `id="reconnect"`, ">"), "disabled") {
		t.Error("reconnect is disabled for a connection that needs it")
	}
	active := b.get("/ui/connections/a-active")
	if !strings.Contains(between(active.body, `id="reconnect"`, ">"), "disabled") {
		t.Error("reconnect is offered for a healthy connection")
	}
	mustContain(t, "a detail page without a failure", active.body, "No events yet")

	link := b.post("/ui/connections/c-reauth/reconnect", url.Values{"csrf": {tok}}, nil)
	if link.status != http.StatusOK || len(rc.ids) != 1 || rc.ids[0] != "c-reauth" {
		t.Fatalf("reconnect: status %d, calls %v", link.status, rc.ids)
	}
	mustContain(t, "the reconnect answer", link.body, `value="https://tb.example/connect/s/abc123"`, "Reconnect link created")

	rc.err = errors.New("connect flow is down")
	if p := b.post("/ui/connections/c-reauth/reconnect", url.Values{"csrf": {tok}}, nil); p.status != http.StatusBadGateway || !strings.Contains(p.body, "could not be created") {
		t.Errorf("failing reconnect: status %d", p.status)
	}

	if p := b.get("/ui/connections/nobody"); p.status != http.StatusNotFound {
		t.Errorf("unknown connection: status %d", p.status)
	}
	if p := b.get("/ui/connections/bad%20id"); p.status != http.StatusNotFound {
		t.Errorf("invalid id: status %d", p.status)
	}
	if p := b.get("/ui/nowhere"); p.status != http.StatusNotFound {
		t.Errorf("unknown page: status %d", p.status)
	}
}

// TestReconnectUnavailable: without a Reconnector the button is disabled
// with a note, and a forced POST says so.
func TestReconnectUnavailable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConnection("c-reauth", "acme")
	h.setState("c-reauth", store.StatusNeedsReauth, &store.Failure{Code: "invalid_grant", Attempts: 1, FirstAt: h.clock.Now()})
	b := h.browser()
	tok := b.signIn(h.adminKey)
	p := b.get("/ui/connections/c-reauth")
	mustContain(t, "the reconnect button", between(p.body, `id="reconnect"`, ">"), "disabled")
	mustContain(t, "the detail page", p.body, "not available in this deployment", "keeps no event history")
	if p := b.post("/ui/connections/c-reauth/reconnect", url.Values{"csrf": {tok}}, nil); p.status != http.StatusNotFound {
		t.Errorf("POST reconnect without a Reconnector: status %d, want 404", p.status)
	}
}

func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	j := strings.Index(s[i:], end)
	if j < 0 {
		return s[i:]
	}
	return s[i : i+j]
}

func TestRefreshNow(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConnection("alice", "acme")
	b := h.browser()
	tok := b.signIn(h.adminKey)

	// The provider is down: the refresh fails, the code comes back in the
	// redirect and the page shows the failure with its message.
	h.authz.FailNext(1, http.StatusServiceUnavailable, nil, `{"error":"temporarily_unavailable","error_description":"maintenance window"}`)
	p := b.post("/ui/connections/alice/refresh", url.Values{"csrf": {tok}}, nil)
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/ui/connections/alice?err=") {
		t.Fatalf("failed refresh: status %d to %q", p.status, p.header.Get("Location"))
	}
	code := strings.TrimPrefix(p.header.Get("Location"), "/ui/connections/alice?err=")
	d := b.get(p.header.Get("Location"))
	mustContain(t, "the page after a failed refresh", d.body, "banner-error", "Refresh failed", code, ">Failing<", `id="failure"`, "maintenance window")

	// It recovers: Refresh now works even inside the backoff cooldown.
	p = b.post("/ui/connections/alice/refresh", url.Values{"csrf": {tok}}, nil)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/connections/alice?ok=refreshed" {
		t.Fatalf("refresh: status %d to %q", p.status, p.header.Get("Location"))
	}
	d = b.get(p.header.Get("Location"))
	mustContain(t, "the page after a refresh", d.body, "banner-ok", ">Active<")
	if strings.Contains(d.body, `id="failure"`) {
		t.Error("the failure record is still shown after a successful refresh")
	}

	// The provider refuses the grant: needs_reauth.
	h.authz.FailNext(1, http.StatusBadRequest, http.Header{"Content-Type": {"application/json"}}, `{"error":"invalid_grant","error_description":"user revoked access"}`)
	p = b.post("/ui/connections/alice/refresh", url.Values{"csrf": {tok}}, nil)
	if p.header.Get("Location") != "/ui/connections/alice?err=invalid_grant" {
		t.Fatalf("invalid_grant refresh: status %d to %q", p.status, p.header.Get("Location"))
	}
	d = b.get(p.header.Get("Location"))
	mustContain(t, "the page after invalid_grant", d.body, ">Needs reauth<", "user revoked access")

	if p := b.post("/ui/connections/nobody/refresh", url.Values{"csrf": {tok}}, nil); p.status != http.StatusNotFound {
		t.Errorf("refresh of an unknown connection: status %d", p.status)
	}
}

func TestDelete(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConnection("alice", "acme")
	b := h.browser()
	tok := b.signIn(h.adminKey)

	confirm := b.get("/ui/connections/alice/delete")
	mustContain(t, "the confirm page", confirm.body, "Delete connection", `name="confirm" value="alice"`, "cannot be undone")
	if p := b.post("/ui/connections/alice/delete", url.Values{"csrf": {tok}}, nil); p.status != http.StatusBadRequest {
		t.Errorf("delete without the confirm step: status %d, want 400", p.status)
	}
	if _, err := h.store.GetConnection(t.Context(), "alice"); err != nil {
		t.Fatalf("unconfirmed delete deleted: %v", err)
	}
	p := b.post("/ui/connections/alice/delete", url.Values{"csrf": {tok}, "confirm": {"alice"}}, nil)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/?ok=deleted&id=alice" {
		t.Fatalf("delete: status %d to %q", p.status, p.header.Get("Location"))
	}
	if _, err := h.store.GetConnection(t.Context(), "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after delete: %v, want not found", err)
	}
	mustContain(t, "the list after delete", b.get(p.header.Get("Location")).body, "Deleted connection alice.")
	if p := b.post("/ui/connections/alice/delete", url.Values{"csrf": {tok}, "confirm": {"alice"}}, nil); p.status != http.StatusNotFound {
		t.Errorf("second delete: status %d, want 404", p.status)
	}
}

func TestSignOut(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	tok := b.signIn(h.adminKey)
	p := b.post("/ui/signout", url.Values{"csrf": {tok}}, nil)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/signin" {
		t.Fatalf("sign-out: status %d to %q", p.status, p.header.Get("Location"))
	}
	if p := b.get("/ui/"); p.status != http.StatusSeeOther {
		t.Errorf("after sign-out: status %d, want a redirect to sign in", p.status)
	}
}

func TestSecurityHeadersAndStatic(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b := h.browser()
	p := b.get("/ui/signin")
	for k, want := range map[string]string{
		"X-Frame-Options":        "DENY",
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-store",
	} {
		if got := p.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	css := b.get("/ui/static/style.css")
	if css.status != http.StatusOK || !strings.HasPrefix(css.header.Get("Content-Type"), "text/css") || !strings.Contains(css.body, ".badge-failing") {
		t.Errorf("stylesheet: status %d, type %q", css.status, css.header.Get("Content-Type"))
	}
	if p := b.get("/ui"); p.status != http.StatusMovedPermanently || p.header.Get("Location") != "/ui/" {
		t.Errorf("/ui: status %d to %q", p.status, p.header.Get("Location"))
	}
}

func TestNewChecksOptions(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	good := func() ui.Options {
		return ui.Options{Broker: h.broker, Keys: h.store, SessionKeys: func() [][]byte { return [][]byte{bytes.Repeat([]byte{1}, 32)} }}
	}
	for name, mutate := range map[string]func(*ui.Options){
		"no broker":       func(o *ui.Options) { o.Broker = nil },
		"no keys":         func(o *ui.Options) { o.Keys = nil },
		"no session keys": func(o *ui.Options) { o.SessionKeys = nil },
		"empty ring":      func(o *ui.Options) { o.SessionKeys = func() [][]byte { return nil } },
		"short key":       func(o *ui.Options) { o.SessionKeys = func() [][]byte { return [][]byte{[]byte("short")} } },
	} {
		o := good()
		mutate(&o)
		if _, err := ui.New(o); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := ui.New(good()); err != nil {
		t.Errorf("good options: %v", err)
	}
}

// TestMountedInServer: the API server hands /ui/ to the dashboard, which
// signs in by cookie while the API still wants its key.
func TestMountedInServer(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConnection("alice", "acme")
	api, err := server.New(server.Options{Broker: h.broker, Keys: h.store, UI: h.ui, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	h.srv = srv // the browser talks to the API server now
	b := h.browser()

	for path, want := range map[string]string{"/ui": "/ui/", "/ui/": "/ui/signin"} {
		p := b.get(path)
		if loc := p.header.Get("Location"); p.status/100 != 3 || loc != want {
			t.Errorf("GET %s: status %d to %q, want a redirect to %s", path, p.status, loc, want)
		}
	}
	if css := b.get("/ui/static/style.css"); css.status != http.StatusOK {
		t.Errorf("stylesheet through the server: status %d", css.status)
	}
	tok := b.signIn(h.adminKey)
	mustContain(t, "the list through the server", b.get("/ui/").body, `data-id="alice"`)
	if p := b.post("/ui/connections/alice/refresh", url.Values{"csrf": {tok}}, nil); p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/connections/alice?ok=refreshed" {
		t.Errorf("refresh through the server: status %d to %q", p.status, p.header.Get("Location"))
	}
	// The session cookie is no API credential.
	if p := b.get("/v1/connections"); p.status != http.StatusUnauthorized {
		t.Errorf("GET /v1/connections with only a dashboard session: status %d, want 401", p.status)
	}
}

// TestFailingFilterPages: the failing filter scans past healthy
// connections and pages through the failing ones.
func TestFailingFilterPages(t *testing.T) {
	h := newHarness(t, harnessOptions{ui: func(o *ui.Options) { o.PageSize = 2 }})
	now := h.clock.Now()
	for i, failing := range []bool{false, true, false, false, true, true, false} {
		id := fmt.Sprintf("c%d", i)
		h.importConnection(id, "acme")
		if failing {
			h.setState(id, store.StatusActive, &store.Failure{Code: "network", Attempts: 1, FirstAt: now})
		}
	}
	b := h.browser()
	b.signIn(h.adminKey)
	p1 := b.get("/ui/?status=failing")
	for id, want := range map[string]bool{"c0": false, "c1": true, "c4": true, "c5": false} {
		if got := strings.Contains(p1.body, `data-id="`+id+`"`); got != want {
			t.Errorf("page 1: %s shown %v, want %v", id, got, want)
		}
	}
	mustContain(t, "page 1", p1.body, `href="/ui/?after=c4&amp;status=failing"`)
	p2 := b.get("/ui/?after=c4&status=failing")
	if !strings.Contains(p2.body, `data-id="c5"`) || strings.Contains(p2.body, `data-id="c6"`) {
		t.Error("page 2 of the failing filter does not hold exactly c5")
	}
}

type fakeCounter map[string]int

func (f fakeCounter) CountByStatus(context.Context) (map[string]int, error) { return f, nil }

func TestSummary(t *testing.T) {
	h := newHarness(t, harnessOptions{ui: func(o *ui.Options) {
		o.Counter = fakeCounter{"active": 7, "failing": 2, "needs_reauth": 1}
	}})
	b := h.browser()
	b.signIn(h.adminKey)
	p := b.get("/ui/?status=failing")
	mustContain(t, "the summary", p.body,
		`<span class="chip-count">10</span> All`,
		`<span class="chip-count">7</span> Active`,
		`chip-failing chip-current" href="/ui/?status=failing"><span class="chip-count">2</span> Failing`,
		`<span class="chip-count">1</span> Needs reauth`,
		`<span class="chip-count">0</span> Revoked`)
}
