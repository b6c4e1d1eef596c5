package libtest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/oauth"
)

// These tests run the source against a real authorization server (fosite)
// with strict refresh-token rotation and reuse detection: one double spend
// would revoke the grant.

func newEndpoint(t *testing.T, srv *authztest.Server) *oauth.Endpoint {
	t.Helper()
	ep, err := oauth.NewEndpoint(oauth.Config{ClientID: srv.ClientID, ClientSecret: srv.ClientSecret, TokenURL: srv.TokenURL()})
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// issued seeds a source with a real grant whose access token has expired.
func issued(t *testing.T, srv *authztest.Server) *oauth.Token {
	access, refresh, _ := srv.IssueTokens(t, "read")
	srv.Expire(t, access)
	return &oauth.Token{AccessToken: access, RefreshToken: refresh, TokenType: "Bearer", Expiry: time.Now().Add(-time.Minute)}
}

func TestIntegrationConcurrentExpired(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	start := issued(t, srv)
	var saved atomic.Pointer[oauth.Token]
	s := mustSource(t, client.Config{
		Refresher: newEndpoint(t, srv),
		Token:     start,
		Save:      func(_ context.Context, tok *oauth.Token) error { saved.Store(tok); return nil },
	})

	const callers = 200
	toks := make([]*oauth.Token, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			tok, err := s.Token(context.Background())
			if err != nil {
				t.Errorf("Token: %v", err)
			}
			toks[i] = tok
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	if n := srv.RefreshCalls(); n != 1 {
		t.Errorf("provider saw %d refreshes, want 1", n)
	}
	if n := srv.ReuseDetected(); n != 0 {
		t.Errorf("provider detected %d refresh-token reuses", n)
	}
	for _, tok := range toks {
		if tok != toks[0] {
			t.Fatal("callers got different tokens")
		}
	}
	got := toks[0]
	if got.AccessToken == start.AccessToken || got.RefreshToken == start.RefreshToken {
		t.Error("the token was not rotated")
	}
	if sv := saved.Load(); sv == nil || sv.RefreshToken != got.RefreshToken {
		t.Error("the rotated refresh token was not saved")
	}
	if !srv.Active(t, got.AccessToken) {
		t.Error("the new access token is not active at the provider")
	}

	// The chain is alive: the saved refresh token refreshes again.
	next, err := s.Refresh(t.Context(), nil)
	if err != nil {
		t.Fatalf("second refresh: %v", err)
	}
	if next.AccessToken == got.AccessToken || srv.RefreshCalls() != 2 || srv.ReuseDetected() != 0 {
		t.Errorf("second refresh: new token %v, refresh calls %d, reuses %d",
			next.AccessToken != got.AccessToken, srv.RefreshCalls(), srv.ReuseDetected())
	}
}

// An API that stops accepting the token: concurrent requests through the
// Transport share one refresh and are replayed with the new token.
func TestIntegrationTransport(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	access, refresh, _ := srv.IssueTokens(t, "read")
	s := mustSource(t, client.Config{
		Refresher: newEndpoint(t, srv),
		Token:     &oauth.Token{AccessToken: access, RefreshToken: refresh, Expiry: time.Now().Add(time.Hour)},
	})

	// The resource server asks the provider whether the token is active
	// (RFC 7662), as a real API would.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const prefix = "Bearer "
		h := r.Header.Get("Authorization")
		if len(h) <= len(prefix) || h[:len(prefix)] != prefix || !srv.Active(t, h[len(prefix):]) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer api.Close()
	c := &http.Client{Transport: &client.Transport{Source: s}}

	get := func() int {
		resp, err := c.Get(api.URL)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(); st != http.StatusNoContent || srv.RefreshCalls() != 0 {
		t.Fatalf("status %d, %d refreshes; want 204 with the initial token", st, srv.RefreshCalls())
	}

	// The provider expires the access token early; the source cannot know.
	srv.Expire(t, access)
	const n = 50
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range n {
		wg.Go(func() {
			if get() == http.StatusNoContent {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != n || srv.RefreshCalls() != 1 || srv.ReuseDetected() != 0 {
		t.Errorf("%d of %d requests succeeded; %d refreshes (want 1), %d reuses (want 0)",
			ok.Load(), n, srv.RefreshCalls(), srv.ReuseDetected())
	}
}

// invalid_grant from a real provider makes the source terminal.
func TestIntegrationRefreshTokenExpired(t *testing.T) {
	srv := authztest.New(t, authztest.Options{})
	start := issued(t, srv)
	srv.Expire(t, start.RefreshToken)
	var failures counter
	s := mustSource(t, client.Config{Refresher: newEndpoint(t, srv), Token: start, OnFailure: failures.record})

	for range 3 {
		if _, err := s.Token(t.Context()); !errors.Is(err, oauth.ErrReauthRequired) {
			t.Fatalf("err = %v, want ErrReauthRequired", err)
		}
	}
	if srv.RefreshCalls() != 1 || failures.count() != 1 {
		t.Errorf("%d refresh calls, %d OnFailure calls; want 1 and 1", srv.RefreshCalls(), failures.count())
	}
}

// TestIntegrationShortLivedTokens: with the default 5-minute window and
// tokens that live 60 seconds, the library follows the same rule as the
// server: a fresh token is not refreshed over 100 reads, 200 readers of an
// expired one share one refresh, and the new token is then served as is.
func TestIntegrationShortLivedTokens(t *testing.T) {
	srv := authztest.New(t, authztest.Options{AccessTokenLifespan: time.Minute})
	clk := &fakeclock.Offset{}
	ep, err := oauth.NewEndpoint(oauth.Config{ClientID: srv.ClientID, ClientSecret: srv.ClientSecret, TokenURL: srv.TokenURL(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	access, refresh, expiresIn := srv.IssueTokens(t, "read")
	s := mustSource(t, client.Config{
		Refresher: ep, Now: clk.Now,
		Token: &oauth.Token{AccessToken: access, RefreshToken: refresh, IssuedAt: clk.Now(), Expiry: clk.Now().Add(expiresIn)},
	})
	ctx := t.Context()
	read := func(n int) map[string]bool {
		seen := map[string]bool{}
		for range n {
			tok, err := s.Token(ctx)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			seen[tok.AccessToken] = true
			clk.Advance(250 * time.Millisecond)
		}
		return seen
	}
	if seen := read(100); len(seen) != 1 || !seen[access] || srv.RefreshCalls() != 0 {
		t.Fatalf("100 reads of a fresh token: %d tokens, %d refreshes; want the one token, 0 refreshes", len(seen), srv.RefreshCalls())
	}
	clk.Advance(time.Minute)
	const readers = 200
	toks := make([]string, readers)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Go(func() {
			if tok, err := s.Token(ctx); err == nil {
				toks[i] = tok.AccessToken
			}
		})
	}
	wg.Wait()
	for i := range toks {
		if toks[i] == "" || toks[i] != toks[0] || toks[i] == access {
			t.Fatalf("reader %d did not get the one new token", i)
		}
	}
	if n := srv.RefreshCalls(); n != 1 {
		t.Fatalf("%d refreshes for %d readers of an expired token, want 1", n, readers)
	}
	if seen := read(100); len(seen) != 1 || !seen[toks[0]] || srv.RefreshCalls() != 1 {
		t.Fatalf("100 reads after the refresh: %d tokens, %d refreshes; want the new token, still 1 refresh", len(seen), srv.RefreshCalls())
	}
}
