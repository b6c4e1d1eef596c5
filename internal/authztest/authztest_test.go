package authztest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// Tests never print token values: failures report booleans, lengths, HTTP
// statuses and OAuth error codes only.

// oauthConfig is an x/oauth2 client for srv, an implementation independent
// of the server's own helpers.
func oauthConfig(srv *authztest.Server, style oauth2.AuthStyle, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     srv.ClientID,
		ClientSecret: srv.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   srv.AuthorizeURL(),
			TokenURL:  srv.TokenURL(),
			AuthStyle: style,
		},
		RedirectURL: srv.RedirectURI(),
		Scopes:      scopes,
	}
}

var noFollow = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// authorize visits authURL like a browser that stops at the redirect and
// returns the redirect's query.
func authorize(t *testing.T, authURL string) (status int, query url.Values) {
	t.Helper()
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatalf("authorization request: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	loc, err := resp.Location()
	if err != nil {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, loc.Query()
}

// codeFor runs the authorization step with PKCE S256 and returns the code.
func codeFor(t *testing.T, conf *oauth2.Config, verifier string) string {
	t.Helper()
	const state = "state-0123456789"
	status, q := authorize(t, conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
	if q == nil || q.Get("code") == "" {
		t.Fatalf("authorization endpoint answered %d, redirect error %q: want a redirect with a code", status, q.Get("error"))
	}
	if q.Get("state") != state {
		t.Fatalf("redirect state differs from the request's")
	}
	return q.Get("code")
}

// errCode is the OAuth error code in err, or a description of err's type;
// never the provider's whole answer, which could hold a token.
func errCode(err error) string {
	var re *oauth2.RetrieveError
	switch {
	case err == nil:
		return "<nil>"
	case errors.As(err, &re):
		return re.ErrorCode
	default:
		return fmt.Sprintf("non-OAuth error %T", err)
	}
}

// tokenAnswer is a token-endpoint answer read with net/http.
type tokenAnswer struct {
	status       int
	header       http.Header
	body         string
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
	Error        string `json:"error"`
}

// postForm sends form to endpoint with the client's credentials in HTTP Basic.
func postForm(t testing.TB, srv *authztest.Server, endpoint string, form url.Values) tokenAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(srv.ClientID, srv.ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	ans := tokenAnswer{status: resp.StatusCode, header: resp.Header, body: string(body)}
	_ = json.Unmarshal(body, &ans) // fault bodies need not be JSON
	return ans
}

func refresh(t testing.TB, srv *authztest.Server, rt string) tokenAnswer {
	t.Helper()
	return postForm(t, srv, srv.TokenURL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
}

// mustRefresh refreshes and fails the test unless a new pair came back.
func mustRefresh(t testing.TB, srv *authztest.Server, rt string) (access, refreshToken string) {
	t.Helper()
	ans := refresh(t, srv, rt)
	if ans.status != http.StatusOK || ans.AccessToken == "" || ans.RefreshToken == "" {
		t.Fatalf("refresh: status %d, error %q, access token %t, refresh token %t; want 200 with both tokens",
			ans.status, ans.Error, ans.AccessToken != "", ans.RefreshToken != "")
	}
	return ans.AccessToken, ans.RefreshToken
}

func wantInvalidGrant(t testing.TB, ans tokenAnswer, what string) {
	t.Helper()
	if ans.status != http.StatusBadRequest || ans.Error != "invalid_grant" {
		t.Errorf("%s: status %d, error %q; want 400 invalid_grant", what, ans.status, ans.Error)
	}
}

func TestAuthorizationCodeWithPKCE(t *testing.T) {
	tests := []struct {
		name   string
		method string // server's TokenEndpointAuthMethod
		style  oauth2.AuthStyle
		wantOK bool
	}{
		{"both accepted, basic", "", oauth2.AuthStyleInHeader, true},
		{"both accepted, post", "", oauth2.AuthStyleInParams, true},
		{"basic only, basic", authztest.AuthMethodBasic, oauth2.AuthStyleInHeader, true},
		{"basic only, post", authztest.AuthMethodBasic, oauth2.AuthStyleInParams, false},
		{"post only, post", authztest.AuthMethodPost, oauth2.AuthStyleInParams, true},
		{"post only, basic", authztest.AuthMethodPost, oauth2.AuthStyleInHeader, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := authztest.New(t, authztest.Options{TokenEndpointAuthMethod: tt.method})
			conf := oauthConfig(srv, tt.style, "read", "write")
			verifier := oauth2.GenerateVerifier()
			code := codeFor(t, conf, verifier)

			tok, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
			if !tt.wantOK {
				if errCode(err) != "invalid_client" {
					t.Fatalf("exchange with the wrong client authentication method: error %s; want invalid_client", errCode(err))
				}
				return
			}
			if err != nil {
				t.Fatalf("exchange: %s", errCode(err))
			}
			if tok.AccessToken == "" || tok.RefreshToken == "" {
				t.Fatalf("exchange: access token %t, refresh token %t; want both", tok.AccessToken != "", tok.RefreshToken != "")
			}
			if !strings.EqualFold(tok.TokenType, "bearer") {
				t.Errorf("token_type %q; want bearer", tok.TokenType)
			}
			if exp, ok := tok.Extra("expires_in").(float64); !ok || exp <= 0 || exp > 3600 {
				t.Errorf("expires_in %v; want in (0, 3600] for the default one-hour lifespan", tok.Extra("expires_in"))
			}
			if scope, _ := tok.Extra("scope").(string); scope != "read write" {
				t.Errorf("granted scope %q; want %q", scope, "read write")
			}
			if !srv.Active(t, tok.AccessToken) {
				t.Errorf("issued access token is not active")
			}

			// The grant is refreshable, by an independent client.
			expired := &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: time.Unix(1, 0)}
			next, err := conf.TokenSource(t.Context(), expired).Token()
			if err != nil {
				t.Fatalf("refresh: %s", errCode(err))
			}
			if next.AccessToken == "" || next.AccessToken == tok.AccessToken {
				t.Errorf("refresh did not return a new access token")
			}
			if got := srv.RefreshCalls(); got != 1 {
				t.Errorf("RefreshCalls = %d; want 1", got)
			}
			if got := srv.TokenCalls(); got != 2 {
				t.Errorf("TokenCalls = %d; want 2 (exchange, refresh)", got)
			}
		})
	}
}

func TestPKCEIsEnforced(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	conf := oauthConfig(srv, oauth2.AuthStyleInHeader, "read")

	t.Run("wrong verifier", func(t *testing.T) {
		code := codeFor(t, conf, oauth2.GenerateVerifier())
		_, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
		if errCode(err) != "invalid_grant" {
			t.Errorf("exchange with a wrong verifier: %s; want invalid_grant", errCode(err))
		}
	})
	t.Run("no verifier", func(t *testing.T) {
		code := codeFor(t, conf, oauth2.GenerateVerifier())
		_, err := conf.Exchange(t.Context(), code)
		if err == nil {
			t.Errorf("exchange without the verifier succeeded; want an error")
		}
	})
	t.Run("code used twice", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code := codeFor(t, conf, verifier)
		tok, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("first exchange: %s", errCode(err))
		}
		_, err = conf.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
		if errCode(err) != "invalid_grant" {
			t.Errorf("second exchange of one code: %s; want invalid_grant", errCode(err))
		}
		// RFC 6749 §4.1.2: tokens issued from a reused code should be revoked.
		if srv.Active(t, tok.AccessToken) {
			t.Errorf("access token from a reused code is still active")
		}
	})
	t.Run("no challenge", func(t *testing.T) {
		status, q := authorize(t, conf.AuthCodeURL("state-0123456789"))
		if q.Get("code") != "" || q.Get("error") == "" {
			t.Errorf("authorization without code_challenge: status %d, code %t, error %q; want an error redirect",
				status, q.Get("code") != "", q.Get("error"))
		}
	})
	t.Run("plain challenge", func(t *testing.T) {
		u := conf.AuthCodeURL("state-0123456789",
			oauth2.SetAuthURLParam("code_challenge", oauth2.GenerateVerifier()),
			oauth2.SetAuthURLParam("code_challenge_method", "plain"))
		status, q := authorize(t, u)
		if q.Get("code") != "" || q.Get("error") == "" {
			t.Errorf("authorization with a plain challenge: status %d, code %t, error %q; want an error redirect",
				status, q.Get("code") != "", q.Get("error"))
		}
	})
}

func TestIssueTokens(t *testing.T) {
	tests := []struct {
		name   string
		opts   authztest.Options
		scopes []string
	}{
		{"defaults", authztest.Options{}, nil},
		{"scopes", authztest.Options{}, []string{"read", "offline_access"}},
		{"post-only client", authztest.Options{TokenEndpointAuthMethod: authztest.AuthMethodPost}, []string{"write"}},
		{"short access lifespan", authztest.Options{AccessTokenLifespan: 5 * time.Minute}, []string{"read"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := authztest.New(t, tt.opts)
			access, rt, expiresIn := srv.IssueTokens(t, tt.scopes...)
			if access == "" || rt == "" {
				t.Fatalf("access token %t, refresh token %t; want both", access != "", rt != "")
			}
			lifespan := tt.opts.AccessTokenLifespan
			if lifespan == 0 {
				lifespan = time.Hour
			}
			if expiresIn <= 0 || expiresIn > lifespan {
				t.Errorf("expiresIn = %v; want in (0, %v]", expiresIn, lifespan)
			}
			if !srv.Active(t, access) || !srv.Active(t, rt) {
				t.Errorf("issued tokens: access active %t, refresh active %t; want both", srv.Active(t, access), srv.Active(t, rt))
			}
			if srv.TokenCalls() != 1 || srv.RefreshCalls() != 0 {
				t.Errorf("TokenCalls %d, RefreshCalls %d; want 1 and 0", srv.TokenCalls(), srv.RefreshCalls())
			}
		})
	}
}

func TestRefreshRotates(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	at0, rt0, _ := srv.IssueTokens(t, "read")

	at1, rt1 := mustRefresh(t, srv, rt0)
	if rt1 == rt0 || at1 == at0 {
		t.Fatalf("refresh returned the same refresh token %t, same access token %t; want new ones", rt1 == rt0, at1 == at0)
	}
	if srv.Active(t, at0) {
		t.Errorf("the access token of the used refresh token is still active")
	}
	if !srv.Active(t, at1) || !srv.Active(t, rt1) {
		t.Errorf("new pair: access active %t, refresh active %t; want both", srv.Active(t, at1), srv.Active(t, rt1))
	}
	if srv.Active(t, rt0) {
		t.Errorf("used refresh token is still active")
	}

	wantInvalidGrant(t, refresh(t, srv, rt0), "refresh with the used refresh token")
	if got := srv.RefreshCalls(); got != 2 {
		t.Errorf("RefreshCalls = %d; want 2", got)
	}
}

func TestReuseRevokesTheChain(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	_, rt0, _ := srv.IssueTokens(t, "read")
	_, rt1 := mustRefresh(t, srv, rt0)
	at2, rt2 := mustRefresh(t, srv, rt1)

	wantInvalidGrant(t, refresh(t, srv, rt0), "replay of the first refresh token")
	if got := srv.ReuseDetected(); got != 1 {
		t.Errorf("ReuseDetected = %d; want 1", got)
	}
	if srv.Active(t, at2) || srv.Active(t, rt2) {
		t.Errorf("after reuse: newest access active %t, newest refresh active %t; want the chain revoked",
			srv.Active(t, at2), srv.Active(t, rt2))
	}
	wantInvalidGrant(t, refresh(t, srv, rt2), "refresh with the newest refresh token after reuse")
	if got := srv.ReuseDetected(); got != 1 {
		t.Errorf("ReuseDetected = %d after using a revoked, never used token; want still 1", got)
	}

	// Each replay of a used token counts, even on a dead chain.
	wantInvalidGrant(t, refresh(t, srv, rt1), "replay of the second refresh token")
	wantInvalidGrant(t, refresh(t, srv, rt0), "second replay of the first refresh token")
	if got := srv.ReuseDetected(); got != 3 {
		t.Errorf("ReuseDetected = %d; want 3", got)
	}
	if got := srv.GraceReuses(); got != 0 {
		t.Errorf("GraceReuses = %d without a grace window; want 0", got)
	}
}

func TestReuseGrace(t *testing.T) {
	t.Run("inside the window", func(t *testing.T) {
		srv := authztest.New(t, authztest.Options{ReuseGrace: time.Hour})
		_, rt0, _ := srv.IssueTokens(t, "read")
		at1, rt1 := mustRefresh(t, srv, rt0)

		// The answer to the first refresh was "lost"; the client retries with rt0.
		at2, rt2 := mustRefresh(t, srv, rt0)
		if at2 == at1 || rt2 == rt1 || rt2 == rt0 {
			t.Errorf("replay in the grace window did not return a fresh pair")
		}
		if srv.ReuseDetected() != 0 || srv.GraceReuses() != 1 {
			t.Errorf("ReuseDetected %d, GraceReuses %d; want 0 and 1", srv.ReuseDetected(), srv.GraceReuses())
		}
		for name, tok := range map[string]string{"first access": at1, "first refresh": rt1, "second access": at2, "second refresh": rt2} {
			if !srv.Active(t, tok) {
				t.Errorf("%s token inactive after a replay inside the grace window; want the chain alive", name)
			}
		}
		// Both branches stay usable.
		mustRefresh(t, srv, rt1)
		mustRefresh(t, srv, rt2)
	})
	t.Run("outside the window", func(t *testing.T) {
		// A nanosecond has passed by the time the first answer is read.
		srv := authztest.New(t, authztest.Options{ReuseGrace: time.Nanosecond})
		_, rt0, _ := srv.IssueTokens(t, "read")
		at1, rt1 := mustRefresh(t, srv, rt0)

		wantInvalidGrant(t, refresh(t, srv, rt0), "replay after the grace window")
		if srv.ReuseDetected() != 1 || srv.GraceReuses() != 0 {
			t.Errorf("ReuseDetected %d, GraceReuses %d; want 1 and 0", srv.ReuseDetected(), srv.GraceReuses())
		}
		if srv.Active(t, at1) || srv.Active(t, rt1) {
			t.Errorf("chain alive after a replay outside the grace window")
		}
	})
}

func TestConcurrentDoubleSpend(t *testing.T) {
	const n = 8
	srv := authztest.New(t, authztest.Options{})
	_, rt0, _ := srv.IssueTokens(t, "read")

	answers := make([]tokenAnswer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { answers[i] = refresh(t, srv, rt0) })
	}
	wg.Wait()

	var winners []tokenAnswer
	for _, a := range answers {
		switch {
		case a.status == http.StatusOK:
			winners = append(winners, a)
		case a.Error != "invalid_grant":
			t.Errorf("concurrent refresh: status %d, error %q; want 200 or invalid_grant", a.status, a.Error)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d of %d concurrent refreshes with one token succeeded; want exactly 1", len(winners), n)
	}
	if got := srv.ReuseDetected(); got != n-1 {
		t.Errorf("ReuseDetected = %d; want %d", got, n-1)
	}
	if srv.Active(t, winners[0].AccessToken) {
		t.Errorf("the winner's access token survived the double spend; want the chain revoked")
	}
	if got := srv.RefreshCalls(); got != n {
		t.Errorf("RefreshCalls = %d; want %d", got, n)
	}
}

func TestClientCredentials(t *testing.T) {
	srv := authztest.New(t, authztest.Options{Scopes: []string{"read", "write"}})
	conf := func(secret string, scopes ...string) *clientcredentials.Config {
		// One auth style: auto-detection would retry each failure once.
		return &clientcredentials.Config{ClientID: srv.ClientID, ClientSecret: secret, TokenURL: srv.TokenURL(), Scopes: scopes, AuthStyle: oauth2.AuthStyleInHeader}
	}

	tok, err := conf(srv.ClientSecret, "read").Token(t.Context())
	if err != nil {
		t.Fatalf("client credentials: %s", errCode(err))
	}
	if tok.AccessToken == "" || tok.RefreshToken != "" {
		t.Errorf("access token %t, refresh token %t; want an access token only", tok.AccessToken != "", tok.RefreshToken != "")
	}
	if !srv.Active(t, tok.AccessToken) {
		t.Errorf("client credentials access token is not active")
	}

	tests := []struct {
		name     string
		conf     *clientcredentials.Config
		wantCode string
	}{
		{"wrong secret", conf("not-the-secret", "read"), "invalid_client"},
		{"scope not allowed", conf(srv.ClientSecret, "admin"), "invalid_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.conf.Token(t.Context()); errCode(err) != tt.wantCode {
				t.Errorf("error %s; want %s", errCode(err), tt.wantCode)
			}
		})
	}
	if got := srv.TokenCalls(); got != 3 {
		t.Errorf("TokenCalls = %d; want 3", got)
	}
}

func TestIntrospection(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	access, rt, _ := srv.IssueTokens(t, "read")
	revokedAccess, _, _ := srv.IssueTokens(t, "read")
	srv.Revoke(t, revokedAccess)

	introspect := func(token, user, pass string, post bool) (int, map[string]any) {
		form := url.Values{"token": {token}}
		if post {
			form.Set("client_id", user)
			form.Set("client_secret", pass)
		}
		req, _ := http.NewRequest(http.MethodPost, srv.IntrospectionURL(), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if !post {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("introspection request: %v", err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}

	tests := []struct {
		name       string
		token      string
		secret     string
		post       bool
		wantStatus int
		wantActive bool
	}{
		{"active access token", access, srv.ClientSecret, false, http.StatusOK, true},
		{"active refresh token", rt, srv.ClientSecret, false, http.StatusOK, true},
		{"client_secret_post", access, srv.ClientSecret, true, http.StatusOK, true},
		{"unknown token", "not-a-token", srv.ClientSecret, false, http.StatusOK, false},
		{"revoked token", revokedAccess, srv.ClientSecret, false, http.StatusOK, false},
		{"wrong client secret", access, "not-the-secret", false, http.StatusUnauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := introspect(tt.token, srv.ClientID, tt.secret, tt.post)
			if status != tt.wantStatus {
				t.Fatalf("status %d; want %d", status, tt.wantStatus)
			}
			if status != http.StatusOK {
				return
			}
			if active, ok := m["active"].(bool); !ok || active != tt.wantActive {
				t.Fatalf("active = %v; want %t", m["active"], tt.wantActive)
			}
			if !tt.wantActive {
				if len(m) != 1 {
					t.Errorf("inactive answer has %d members; want only \"active\" (RFC 7662 §2.2)", len(m))
				}
				return
			}
			if m["client_id"] != srv.ClientID || m["scope"] != "read" || m["sub"] != authztest.Subject {
				t.Errorf("client_id %v, scope %v, sub %v; want %s, read, %s", m["client_id"], m["scope"], m["sub"], srv.ClientID, authztest.Subject)
			}
			if exp, ok := m["exp"].(float64); !ok || exp <= 0 {
				t.Errorf("exp = %v; want a positive number", m["exp"])
			}
		})
	}
}

func TestRevocation(t *testing.T) {
	tests := []struct {
		name   string
		revoke func(access, refresh string) string
	}{
		{"refresh token", func(_, rt string) string { return rt }},
		{"access token", func(at, _ string) string { return at }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := authztest.New(t, authztest.Options{})
			at, rt, _ := srv.IssueTokens(t, "read")
			ans := postForm(t, srv, srv.RevocationURL(), url.Values{"token": {tt.revoke(at, rt)}})
			if ans.status != http.StatusOK {
				t.Fatalf("revocation: status %d, error %q; want 200", ans.status, ans.Error)
			}
			if srv.Active(t, at) || srv.Active(t, rt) {
				t.Errorf("after revocation: access active %t, refresh active %t; want the grant revoked", srv.Active(t, at), srv.Active(t, rt))
			}
			wantInvalidGrant(t, refresh(t, srv, rt), "refresh after revocation")
		})
	}

	t.Run("client not authenticated", func(t *testing.T) {
		srv := authztest.New(t, authztest.Options{})
		at, _, _ := srv.IssueTokens(t, "read")
		for _, secret := range []string{"", "not-the-secret"} {
			req, _ := http.NewRequest(http.MethodPost, srv.RevocationURL(), strings.NewReader(url.Values{"token": {at}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if secret != "" {
				req.SetBasicAuth(srv.ClientID, secret)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			// fosite: missing credentials are invalid_request (400), wrong ones invalid_client (401).
			want := http.StatusUnauthorized
			if secret == "" {
				want = http.StatusBadRequest
			}
			if resp.StatusCode != want {
				t.Errorf("revocation with secret set %t: status %d; want %d", secret != "", resp.StatusCode, want)
			}
		}
		if !srv.Active(t, at) {
			t.Errorf("unauthenticated revocation revoked the token")
		}
	})
	t.Run("unknown token", func(t *testing.T) {
		srv := authztest.New(t, authztest.Options{})
		// RFC 7009 §2.2: invalid tokens do not cause an error response.
		if ans := postForm(t, srv, srv.RevocationURL(), url.Values{"token": {"not-a-token"}}); ans.status != http.StatusOK {
			t.Errorf("revocation of an unknown token: status %d; want 200", ans.status)
		}
	})
}

func TestFailNext(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	_, rt0, _ := srv.IssueTokens(t, "read")
	calls0 := srv.TokenCalls()

	const body = `{"error":"temporarily_unavailable"}`
	srv.FailNext(2, http.StatusServiceUnavailable, http.Header{"Retry-After": {"7"}, "Content-Type": {"application/json"}}, body)
	for i := range 2 {
		ans := refresh(t, srv, rt0)
		if ans.status != http.StatusServiceUnavailable || ans.header.Get("Retry-After") != "7" ||
			ans.header.Get("Content-Type") != "application/json" || ans.body != body {
			t.Errorf("call %d: status %d, Retry-After %q, Content-Type %q, body as injected %t; want the injected answer",
				i+1, ans.status, ans.header.Get("Retry-After"), ans.header.Get("Content-Type"), ans.body == body)
		}
	}
	// The injected failures did not process the request: rt0 is still unused.
	mustRefresh(t, srv, rt0)
	if got := srv.TokenCalls() - calls0; got != 3 {
		t.Errorf("TokenCalls grew by %d; want 3", got)
	}
	if got := srv.RefreshCalls(); got != 3 {
		t.Errorf("RefreshCalls = %d; want 3", got)
	}

	t.Run("200 with an HTML body", func(t *testing.T) {
		const page = "<html><body>Sign in</body></html>"
		srv.FailNext(1, http.StatusOK, http.Header{"Content-Type": {"text/html"}}, page)
		ans := refresh(t, srv, "whatever")
		if ans.status != http.StatusOK || ans.body != page || ans.header.Get("Content-Type") != "text/html" {
			t.Errorf("status %d, Content-Type %q, body as injected %t; want the injected page", ans.status, ans.header.Get("Content-Type"), ans.body == page)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		srv.FailNext(5, http.StatusInternalServerError, nil, "")
		srv.FailNext(0, http.StatusInternalServerError, nil, "")
		if ans := refresh(t, srv, "not-a-token"); ans.status != http.StatusBadRequest || ans.Error != "invalid_grant" {
			t.Errorf("after cancelling: status %d, error %q; want the server's own 400 invalid_grant", ans.status, ans.Error)
		}
	})
	t.Run("invalid status", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Errorf("FailNext with status 42 did not panic")
			}
		}()
		srv.FailNext(1, 42, nil, "")
	})
}

func TestCountersUnderConcurrency(t *testing.T) {
	const workers, each = 8, 5
	srv := authztest.New(t, authztest.Options{})
	srv.FailNext(workers, http.StatusBadGateway, nil, "bad gateway")

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				form := url.Values{"grant_type": {"client_credentials"}}
				if (w+i)%2 == 0 {
					form = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"not-a-token"}}
				}
				ans := postForm(t, srv, srv.TokenURL(), form)
				if ans.status != http.StatusOK && ans.status != http.StatusBadRequest && ans.status != http.StatusBadGateway {
					t.Errorf("status %d; want 200, 400 or the injected 502", ans.status)
				}
			}
		})
	}
	wg.Wait()

	wantRefresh := 0
	for w := range workers {
		for i := range each {
			if (w+i)%2 == 0 {
				wantRefresh++
			}
		}
	}
	if got := srv.TokenCalls(); got != workers*each {
		t.Errorf("TokenCalls = %d; want %d", got, workers*each)
	}
	if got := srv.RefreshCalls(); got != int64(wantRefresh) {
		t.Errorf("RefreshCalls = %d; want %d", got, wantRefresh)
	}
	// Exactly the armed number of failures was served.
	if ans := postForm(t, srv, srv.TokenURL(), url.Values{"grant_type": {"client_credentials"}}); ans.status != http.StatusOK {
		t.Errorf("after the injected failures: status %d; want 200", ans.status)
	}
}

func TestDiscovery(t *testing.T) {
	for _, method := range []string{"", authztest.AuthMethodPost} {
		srv := authztest.New(t, authztest.Options{TokenEndpointAuthMethod: method})
		wantMethods := []string{authztest.AuthMethodBasic, authztest.AuthMethodPost}
		if method != "" {
			wantMethods = []string{method}
		}
		for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
			t.Run(path+" "+method, func(t *testing.T) {
				resp, err := http.Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
					t.Fatalf("status %d, Content-Type %q; want 200 JSON", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				var md struct {
					Issuer                            string   `json:"issuer"`
					AuthorizationEndpoint             string   `json:"authorization_endpoint"`
					TokenEndpoint                     string   `json:"token_endpoint"`
					IntrospectionEndpoint             string   `json:"introspection_endpoint"`
					RevocationEndpoint                string   `json:"revocation_endpoint"`
					ResponseTypesSupported            []string `json:"response_types_supported"`
					GrantTypesSupported               []string `json:"grant_types_supported"`
					CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported"`
					TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
				}
				if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
					t.Fatalf("decoding metadata: %v", err)
				}
				for _, c := range []struct{ field, got, want string }{
					{"issuer", md.Issuer, srv.Issuer},
					{"authorization_endpoint", md.AuthorizationEndpoint, srv.AuthorizeURL()},
					{"token_endpoint", md.TokenEndpoint, srv.TokenURL()},
					{"introspection_endpoint", md.IntrospectionEndpoint, srv.IntrospectionURL()},
					{"revocation_endpoint", md.RevocationEndpoint, srv.RevocationURL()},
				} {
					if c.got != c.want || c.got == "" {
						t.Errorf("%s = %q; want %q", c.field, c.got, c.want)
					}
				}
				// RFC 8414 §3: the metadata lives under the issuer, which has no path.
				if srv.Issuer != srv.URL || !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
					t.Errorf("issuer %q, URL %q; want both http://127.0.0.1:port", srv.Issuer, srv.URL)
				}
				for _, gt := range []string{"authorization_code", "refresh_token", "client_credentials"} {
					if !slices.Contains(md.GrantTypesSupported, gt) {
						t.Errorf("grant_types_supported %v lacks %s", md.GrantTypesSupported, gt)
					}
				}
				if !slices.Equal(md.CodeChallengeMethodsSupported, []string{"S256"}) {
					t.Errorf("code_challenge_methods_supported = %v; want [S256]", md.CodeChallengeMethodsSupported)
				}
				if !slices.Equal(md.ResponseTypesSupported, []string{"code"}) {
					t.Errorf("response_types_supported = %v; want [code]", md.ResponseTypesSupported)
				}
				if !slices.Equal(md.TokenEndpointAuthMethodsSupported, wantMethods) {
					t.Errorf("token_endpoint_auth_methods_supported = %v; want %v", md.TokenEndpointAuthMethodsSupported, wantMethods)
				}
				// The advertised token endpoint works.
				style := oauth2.AuthStyleInHeader
				if method == authztest.AuthMethodPost {
					style = oauth2.AuthStyleInParams
				}
				cc := clientcredentials.Config{ClientID: srv.ClientID, ClientSecret: srv.ClientSecret, TokenURL: md.TokenEndpoint, AuthStyle: style}
				if _, err := cc.Token(t.Context()); err != nil {
					t.Errorf("client credentials at the advertised token endpoint: %s", errCode(err))
				}
			})
		}
	}
}

func TestConsent(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	conf := oauthConfig(srv, oauth2.AuthStyleInHeader, "read")
	const state = "state-0123456789"
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))

	tests := []struct {
		name      string
		deny      bool
		wantError string
	}{
		{"denied", true, "access_denied"},
		{"granted again", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.DenyConsent(tt.deny)
			status, q := authorize(t, authURL)
			if q == nil {
				t.Fatalf("status %d without a redirect; want a redirect", status)
			}
			if q.Get("error") != tt.wantError || (q.Get("code") != "") == tt.deny || q.Get("state") != state {
				t.Errorf("redirect: error %q, code %t, state kept %t; want error %q, code %t, state kept",
					q.Get("error"), q.Get("code") != "", q.Get("state") == state, tt.wantError, !tt.deny)
			}
		})
	}
}

func TestRedirectURIs(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	const extra = "http://127.0.0.1:9/broker/callback"
	srv.AddRedirectURI(extra)

	tests := []struct {
		name         string
		redirect     string
		wantRedirect bool
	}{
		{"default", srv.RedirectURI(), true},
		{"added", extra, true},
		{"unregistered path", "http://127.0.0.1:9/elsewhere", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := oauthConfig(srv, oauth2.AuthStyleInHeader, "read")
			conf.RedirectURL = tt.redirect
			resp, err := noFollow.Get(conf.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, err := resp.Location()
			if !tt.wantRedirect {
				if err == nil {
					t.Errorf("status %d, redirected to an unregistered URI; want no redirect", resp.StatusCode)
				}
				return
			}
			if err != nil || loc.Query().Get("code") == "" {
				t.Fatalf("status %d; want a redirect with a code", resp.StatusCode)
			}
			loc.RawQuery = ""
			if loc.String() != tt.redirect {
				t.Errorf("redirected to %q; want %q", loc, tt.redirect)
			}
		})
	}
}

func TestExpire(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	at, rt, _ := srv.IssueTokens(t, "read")

	srv.Expire(t, at)
	if srv.Active(t, at) {
		t.Errorf("expired access token is active")
	}
	if !srv.Active(t, rt) {
		t.Errorf("refresh token inactive after its access token expired")
	}
	at1, rt1 := mustRefresh(t, srv, rt)
	if !srv.Active(t, at1) {
		t.Errorf("access token from refreshing after expiry is not active")
	}

	srv.Expire(t, rt1)
	wantInvalidGrant(t, refresh(t, srv, rt1), "refresh with an expired refresh token")
	if srv.ReuseDetected() != 0 {
		t.Errorf("ReuseDetected = %d after an expired refresh token; want 0", srv.ReuseDetected())
	}

	ft := &fatalRecorder{TB: t}
	srv.Expire(ft, "ory_at_not-a-token")
	if !ft.failed {
		t.Errorf("Expire of an unknown token did not fail the test")
	}
}

func TestClose(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	srv.Close()
	srv.Close() // idempotent
	if resp, err := http.PostForm(srv.TokenURL(), url.Values{"grant_type": {"client_credentials"}}); err == nil {
		resp.Body.Close()
		t.Errorf("token endpoint answered %d after Close; want a connection error", resp.StatusCode)
	}
}

func TestInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opts authztest.Options
		want string // in the failure message
	}{
		{"negative access lifespan", authztest.Options{AccessTokenLifespan: -time.Second}, "AccessTokenLifespan"},
		{"negative refresh lifespan", authztest.Options{RefreshTokenLifespan: -1}, "RefreshTokenLifespan"},
		{"negative grace", authztest.Options{ReuseGrace: -time.Second}, "ReuseGrace"},
		{"negative delay", authztest.Options{TokenDelay: -time.Second}, "TokenDelay"},
		{"unknown auth method", authztest.Options{TokenEndpointAuthMethod: "private_key_jwt"}, "TokenEndpointAuthMethod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft := &fatalRecorder{TB: t}
			if srv := authztest.New(ft, tt.opts); srv != nil || !ft.failed || !strings.Contains(ft.msg, tt.want) {
				t.Errorf("New: server %t, failed %t, message %q; want no server and a failure naming %s", srv != nil, ft.failed, ft.msg, tt.want)
			}
		})
	}
}

func TestRefreshTokenLifespan(t *testing.T) {
	srv := authztest.New(t, authztest.Options{RefreshTokenLifespan: time.Hour})
	_, rt, _ := srv.IssueTokens(t, "read")
	// A refresh token with a lifespan is valid until it ends.
	mustRefresh(t, srv, rt)
}

// fatalRecorder records Fatalf instead of stopping the test, to check that
// helpers fail the test when they should.
type fatalRecorder struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
}
