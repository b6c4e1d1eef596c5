package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

func newClockedBroker(t testing.TB, e *env, clk *fakeclock.Offset, tweak func(*broker.Provider), opts func(*broker.Options)) *broker.Broker {
	t.Helper()
	// The endpoint reads the same clock, so that a refreshed token's expiry
	// is in the broker's time, not the wall clock's.
	ep, err := oauth.NewEndpoint(oauth.Config{
		ClientID: e.srv.ClientID, ClientSecret: e.srv.ClientSecret,
		TokenURL: e.srv.TokenURL(), IntrospectionURL: e.srv.IntrospectionURL(), RevocationURL: e.srv.RevocationURL(),
		Retry: oauth.Backoff{MaxAttempts: 1}, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := broker.Provider{Endpoint: &countingEndpoint{ep: ep}, Policy: lifecycle.Policy{Window: 5 * time.Minute}}
	if tweak != nil {
		tweak(&p)
	}
	o := broker.Options{
		Store: e.store, Sealer: e.ring, Owner: "clocked", Now: clk.Now, Events: e.events,
		Providers: map[string]broker.Provider{"acme": p},
		Backoff:   oauth.Backoff{Base: time.Minute, Max: 10 * time.Minute},
	}
	if opts != nil {
		opts(&o)
	}
	b, err := broker.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRefreshIfDue(t *testing.T) {
	e := newEnv(t, envOptions{})
	clk := &fakeclock.Offset{}
	b := newClockedBroker(t, e, clk, nil, nil)
	ctx := context.Background()
	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	c, err := b.CreateConnection(ctx, broker.Import{ID: "c1", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// Scheduled ahead of the window, with jitter of at most half of it.
	lead := c.ExpiresAt.Sub(c.NextRefreshAt)
	if lead < 5*time.Minute || lead > 7*time.Minute+30*time.Second {
		t.Fatalf("next refresh %v before expiry, want between the window and 1.5 windows", lead)
	}
	if err := b.RefreshIfDue(ctx, "c1"); err != nil || e.srv.RefreshCalls() != 0 {
		t.Fatalf("a connection not yet due was refreshed (err %v)", err)
	}
	clk.Advance(56 * time.Minute)
	if err := b.RefreshIfDue(ctx, "c1"); err != nil || e.srv.RefreshCalls() != 1 {
		t.Fatalf("a due connection was not refreshed: %d calls, err %v", e.srv.RefreshCalls(), err)
	}
	after, _ := e.store.GetConnection(ctx, "c1")
	lead = after.ExpiresAt.Sub(after.NextRefreshAt)
	if !after.ExpiresAt.After(c.ExpiresAt) || lead < 5*time.Minute || lead > 7*time.Minute+30*time.Second {
		t.Fatalf("after the refresh the next one is %v before the new expiry, want it rescheduled ahead of the new window", lead)
	}
}

func TestKeepAliveRefreshesIdleRefreshToken(t *testing.T) {
	e := newEnv(t, envOptions{})
	clk := &fakeclock.Offset{}
	b := newClockedBroker(t, e, clk, func(p *broker.Provider) { p.Policy.RefreshIdleTimeout = 30 * 24 * time.Hour }, nil)
	ctx := context.Background()
	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	// A token that never expires, at a provider whose refresh tokens die
	// after 30 days unused.
	c, err := b.CreateConnection(ctx, broker.Import{ID: "c1", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := c.NextRefreshAt.Sub(clk.Now()); d > 28*24*time.Hour || d < 26*24*time.Hour {
		t.Fatalf("keep-alive scheduled in %v, want 27 days", d)
	}
	clk.Advance(20 * 24 * time.Hour)
	if err := b.RefreshIfDue(ctx, "c1"); err != nil || e.srv.RefreshCalls() != 0 {
		t.Fatal("refreshed before the keep-alive was due")
	}
	clk.Advance(8 * 24 * time.Hour)
	if err := b.RefreshIfDue(ctx, "c1"); err != nil || e.srv.RefreshCalls() != 1 {
		t.Fatalf("keep-alive refresh: %d calls, err %v", e.srv.RefreshCalls(), err)
	}
}

func TestPersistentTransientFailureBecomesNeedsReauth(t *testing.T) {
	e := newEnv(t, envOptions{})
	clk := &fakeclock.Offset{}
	b := newClockedBroker(t, e, clk, nil, func(o *broker.Options) { o.GiveUpAfter = 3 * time.Hour })
	ctx := context.Background()
	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	if _, err := b.CreateConnection(ctx, broker.Import{ID: "c1", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresAt: clk.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	e.srv.FailNext(100, 503, nil, "")
	var calls int64
	for i := 0; ; i++ {
		err := b.RefreshIfDue(ctx, "c1")
		if oauth.Terminal(err) {
			break
		}
		if !errors.Is(err, oauth.ErrTransient) {
			t.Fatalf("attempt %d: %v", i, err)
		}
		if i > 50 {
			t.Fatal("never gave up")
		}
		if e.srv.RefreshCalls() == calls {
			// In the cooldown: no provider call. Move past it.
			clk.Advance(11 * time.Minute)
		}
		calls = e.srv.RefreshCalls()
	}
	c, _ := e.store.GetConnection(ctx, "c1")
	if c.Status != store.StatusNeedsReauth || c.Failure.Code != "http_503" {
		t.Fatalf("status %s, failure %+v; want needs_reauth after 3h of 503s", c.Status, c.Failure)
	}
	if e.events.count(broker.EventReauthRequired) != 1 || e.events.count(broker.EventRefreshFailed) == 0 {
		t.Fatal("want refresh_failed events then one reauth_required")
	}
	// Bounded: each attempt was spaced by the backoff, so 3h cost a few calls.
	if n := e.srv.RefreshCalls(); n > 25 {
		t.Fatalf("%d provider calls in 3 hours of outage", n)
	}
}

// A connection whose provider keeps failing transiently, asked for every
// five minutes of a day by several callers and the scheduler, costs the provider a few dozen calls at
// most (each attempt here is one call; the real endpoint may retry a blip
// up to twice more within an attempt).
func TestFailingConnectionIsNotHammered(t *testing.T) {
	e := newEnv(t, envOptions{})
	clk := &fakeclock.Offset{}
	b := newClockedBroker(t, e, clk, nil, func(o *broker.Options) {
		o.Backoff = oauth.Backoff{} // the defaults
		o.GiveUpAfter = 7 * 24 * time.Hour
	})
	ctx := context.Background()
	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	if _, err := b.CreateConnection(ctx, broker.Import{ID: "c1", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresAt: clk.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	e.srv.FailNext(100000, 503, nil, "")
	before := e.srv.RefreshCalls()
	for minute := 0; minute < 24*60; minute += 5 {
		for range 3 {
			if _, err := b.GetToken(ctx, "c1"); !errors.Is(err, oauth.ErrTransient) {
				t.Fatalf("minute %d: GetToken = %v, want a transient error", minute, err)
			}
		}
		_ = b.RefreshIfDue(ctx, "c1")
		clk.Advance(5 * time.Minute)
	}
	calls := e.srv.RefreshCalls() - before
	if calls > 20 {
		t.Fatalf("a failing connection cost the provider %d calls in a day, want at most 20", calls)
	}
	if calls < 5 {
		t.Fatalf("only %d attempts in a day: the broker stopped trying too soon", calls)
	}
	t.Logf("%d provider calls in one simulated day", calls)
}

func TestRefreshExpiringSoon(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	sealed := []byte("sealed-refresh-token")
	for _, tc := range []struct {
		name string
		c    store.Connection
		want bool
	}{
		{"hard limit in 3 days", store.Connection{Status: store.StatusActive, RefreshToken: sealed, RefreshHardExpiresAt: now.Add(3 * day)}, true},
		{"refresh expiry in 13 days", store.Connection{Status: store.StatusActive, RefreshToken: sealed, RefreshExpiresAt: now.Add(13 * day)}, true},
		{"refresh expiry in 30 days", store.Connection{Status: store.StatusActive, RefreshToken: sealed, RefreshExpiresAt: now.Add(30 * day)}, false},
		{"already ended", store.Connection{Status: store.StatusActive, RefreshToken: sealed, RefreshHardExpiresAt: now.Add(-day)}, false},
		{"unknown", store.Connection{Status: store.StatusActive, RefreshToken: sealed}, false},
		{"no refresh token", store.Connection{Status: store.StatusActive, RefreshHardExpiresAt: now.Add(day)}, false},
		{"needs reauth already", store.Connection{Status: store.StatusNeedsReauth, RefreshToken: sealed, RefreshHardExpiresAt: now.Add(day)}, false},
	} {
		if got := broker.RefreshExpiringSoon(&tc.c, now); got != tc.want {
			t.Errorf("%s: RefreshExpiringSoon = %v, want %v", tc.name, got, tc.want)
		}
	}
}
