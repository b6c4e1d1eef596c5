package broker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/scheduler"
	"github.com/tokenbroker/tokenbroker/store"
)

// shortLived is a broker with the default 5-minute window in front of the
// real authorization server issuing tokens that live life.
func shortLived(t *testing.T, life time.Duration) (*env, *fakeclock.Offset, *broker.Broker) {
	e := newEnv(t, envOptions{authz: authztest.Options{AccessTokenLifespan: life}})
	clk := &fakeclock.Offset{}
	b := newClockedBroker(t, e, clk, func(p *broker.Provider) { p.Policy = lifecycle.Policy{} }, nil)
	return e, clk, b
}

// TestShortLivedTokensAreNotRefreshedPerRead: against tokens shorter than
// the refresh window (60s and Keycloak's 5m, window 5m), a fresh token is
// never refreshed, 200 readers of an expired one share exactly one refresh
// and all get its token, and that token is then served without refreshing.
func TestShortLivedTokensAreNotRefreshedPerRead(t *testing.T) {
	for _, life := range []time.Duration{time.Minute, 5 * time.Minute} {
		t.Run(life.String(), func(t *testing.T) {
			e, clk, b := shortLived(t, life)
			ctx := t.Context()
			access, refresh, expiresIn := e.srv.IssueTokens(t, "offline")
			if expiresIn < life-2*time.Second || expiresIn > life {
				t.Fatalf("the authorization server issued a %v token, want %v", expiresIn, life)
			}
			if _, err := b.CreateConnection(ctx, broker.Import{ID: "c", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: expiresIn}); err != nil {
				t.Fatal(err)
			}
			// 100 reads over the first half of its life: all the same, fresh token.
			for i := range 100 {
				tok, err := b.GetToken(ctx, "c")
				if err != nil || tok.AccessToken != access {
					t.Fatalf("read %d of a fresh token: err %v or a different token", i, err)
				}
				clk.Advance(life * 4 / 10 / 100)
			}
			if n := e.srv.RefreshCalls(); n != 0 {
				t.Fatalf("%d refreshes of a fresh %v token over 100 reads, want 0", n, life)
			}

			clk.Advance(life) // expired
			const readers = 200
			toks := make([]broker.Token, readers)
			errs := make([]error, readers)
			var wg sync.WaitGroup
			for i := range readers {
				wg.Go(func() { toks[i], errs[i] = b.GetToken(ctx, "c") })
			}
			wg.Wait()
			for i := range readers {
				if errs[i] != nil || toks[i].AccessToken != toks[0].AccessToken {
					t.Fatalf("reader %d: err %v, or a different token from reader 0", i, errs[i])
				}
			}
			if n := e.srv.RefreshCalls(); n != 1 {
				t.Fatalf("%d refreshes for %d concurrent readers of an expired token, want exactly 1", n, readers)
			}
			if toks[0].AccessToken == access || !e.srv.Active(t, toks[0].AccessToken) {
				t.Fatal("the readers got the expired token, or one the server does not know")
			}
			for i := range 100 {
				tok, err := b.GetToken(ctx, "c")
				if err != nil || tok.AccessToken != toks[0].AccessToken {
					t.Fatalf("read %d after the refresh: err %v or a different token", i, err)
				}
				clk.Advance(life * 4 / 10 / 100)
			}
			if n := e.srv.RefreshCalls(); n != 1 {
				t.Fatalf("%d refreshes after 100 more reads of the new token, want still 1", n)
			}
			if n := e.srv.ReuseDetected(); n != 0 {
				t.Fatalf("the authorization server saw %d refresh token reuses", n)
			}
		})
	}
}

// TestSchedulerRefreshesOncePerToken: the scheduler, cycling every second,
// refreshes a short-lived connection once per token (at its due time, a
// little ahead with jitter), not once per cycle, and keeps it from expiring.
func TestSchedulerRefreshesOncePerToken(t *testing.T) {
	for _, life := range []time.Duration{time.Minute, 5 * time.Minute} {
		t.Run(life.String(), func(t *testing.T) {
			e, clk, b := shortLived(t, life)
			ctx := t.Context()
			sched, err := scheduler.New(scheduler.Options{Store: e.store, Refresher: b, Owner: "s", Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			access, refresh, expiresIn := e.srv.IssueTokens(t, "offline")
			if _, err := b.CreateConnection(ctx, broker.Import{ID: "c", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: expiresIn}); err != nil {
				t.Fatal(err)
			}
			cycles := 0
			for end := clk.Now().Add(3 * life); clk.Now().Before(end); clk.Advance(time.Second) {
				if _, err := sched.RunOnce(ctx); err != nil {
					t.Fatal(err)
				}
				cycles++
				c, err := e.store.GetConnection(ctx, "c")
				if err != nil {
					t.Fatal(err)
				}
				if !clk.Now().Before(c.ExpiresAt) {
					t.Fatalf("the connection expired under the scheduler at +%v", clk.Now().Sub(c.IssuedAt))
				}
			}
			// Each token is refreshed once, when due: every (life - window)
			// at most, and at least every (life - 1.25 window) with jitter.
			epoch := time.Unix(0, 0)
			w := lifecycle.Policy{}.EffectiveWindow(epoch, epoch.Add(life))
			most := int(3*life/(life-w-w/4)) + 1
			least := int(3*life/(life-w)) - 1
			n := int(e.srv.RefreshCalls())
			if n < least || n > most {
				t.Fatalf("%d refreshes over 3 lifetimes in %d scheduler cycles, want %d..%d (one per token)", n, cycles, least, most)
			}
			t.Logf("life %v: %d refreshes in 3 lifetimes (%d cycles), effective window %v", life, n, cycles, w)
		})
	}
}

// TestLearntExpiryReschedules: a token imported again (or connected) with
// no lifetime gets the provider's default, then introspection (RFC 7662)
// learns the real, shorter one; the next refresh is scheduled from that.
func TestLearntExpiryReschedules(t *testing.T) {
	e := newEnv(t, envOptions{authz: authztest.Options{AccessTokenLifespan: 10 * time.Minute}})
	clk := &fakeclock.Offset{}
	b := newClockedBroker(t, e, clk, func(p *broker.Provider) {
		p.Policy = lifecycle.Policy{DefaultLifetime: 2 * time.Hour}
		p.CanIntrospect = true
	}, nil)
	ctx := t.Context()
	check := func(what string, c store.Connection) {
		t.Helper()
		if c.ExpiryDefaulted || c.ExpiresAt.After(clk.Now().Add(11*time.Minute)) {
			t.Fatalf("%s: expiry %v after now (defaulted %v), want the ~10m learnt by introspection", what, c.ExpiresAt.Sub(clk.Now()), c.ExpiryDefaulted)
		}
		if !c.NextRefreshAt.Before(c.ExpiresAt) || c.NextRefreshAt.Before(c.ExpiresAt.Add(-5*time.Minute-5*time.Minute/4)) {
			t.Fatalf("%s: next_refresh_at %v before expiry, want within the learnt expiry's window", what, c.ExpiresAt.Sub(c.NextRefreshAt))
		}
		stored, err := e.store.GetConnection(ctx, c.ID)
		if err != nil || !stored.NextRefreshAt.Equal(c.NextRefreshAt) {
			t.Fatalf("%s: stored next_refresh_at %v differs from the returned %v (%v)", what, stored.NextRefreshAt, c.NextRefreshAt, err)
		}
	}

	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	if _, err := b.CreateConnection(ctx, broker.Import{ID: "c", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	access, refresh, _ = e.srv.IssueTokens(t, "offline")
	c, created, err := b.ReimportConnection(ctx, broker.Import{ID: "c", Provider: "acme", AccessToken: access, RefreshToken: refresh})
	if err != nil || created {
		t.Fatalf("re-import: created %v, %v", created, err)
	}
	check("re-import", c)

	access, refresh, _ = e.srv.IssueTokens(t, "offline")
	c, err = b.ConnectWithToken(ctx, "c", "acme", &oauth.Token{AccessToken: access, RefreshToken: refresh, IssuedAt: clk.Now()})
	if err != nil {
		t.Fatal(err)
	}
	check("connect", c)
}

// TestUnsavedClientCredentialsTokenKeepsItsProvider: a renewed
// client-credentials token that could not be saved is still handed out,
// with the provider the proxy routes on.
func TestUnsavedClientCredentialsTokenKeepsItsProvider(t *testing.T) {
	var flaky *flakyStore
	e := newConnectEnvWith(t, func(s store.Backend) broker.Store {
		flaky = &flakyStore{Backend: s}
		return flaky
	})
	ctx := t.Context()
	if _, err := e.broker.CreateClientCredentialsConnection(ctx, broker.ClientCredentialsImport{ID: "svc", Provider: "acme"}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	flaky.down.Store(true)
	tok, err := e.broker.GetToken(ctx, "svc")
	if err != nil {
		t.Fatalf("GetToken with the store refusing writes: %v", err)
	}
	if tok.Provider != "acme" || !e.srv.Active(t, tok.AccessToken) {
		t.Fatalf("unsaved renewed token: provider %q, active %v; the proxy routes on the provider", tok.Provider, e.srv.Active(t, tok.AccessToken))
	}
}

// BenchmarkRefreshesPerLifetime reports, for tokens living 60s, 5m, 1h and
// 24h behind the default 5-minute window, how many provider refreshes 32
// concurrent readers cause over three lifetimes (simulated time, the real
// authorization server): refreshes per token issued (1.0: every token is
// refreshed once, when due) and per lifetime elapsed.
func BenchmarkRefreshesPerLifetime(b *testing.B) {
	for _, life := range []time.Duration{time.Minute, 5 * time.Minute, time.Hour, 24 * time.Hour} {
		b.Run(life.String(), func(b *testing.B) {
			for range b.N {
				refreshes, tokens := refreshesOverLifetimes(b, life, 32, 3)
				b.ReportMetric(float64(refreshes)/float64(tokens), "refreshes/token")
				b.ReportMetric(float64(refreshes)/3, "refreshes/lifetime")
			}
		})
	}
}

func refreshesOverLifetimes(b *testing.B, life time.Duration, readers, lifetimes int) (refreshes, tokens int) {
	e := newEnv(b, envOptions{authz: authztest.Options{AccessTokenLifespan: life}})
	clk := &fakeclock.Offset{}
	br := newClockedBroker(b, e, clk, func(p *broker.Provider) { p.Policy = lifecycle.Policy{} }, nil)
	ctx := context.Background()
	access, refresh, expiresIn := e.srv.IssueTokens(b, "offline")
	if _, err := br.CreateConnection(ctx, broker.Import{ID: "c", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: expiresIn}); err != nil {
		b.Fatal(err)
	}
	seen := map[string]bool{access: true}
	var mu sync.Mutex
	step := life / 400
	for end := clk.Now().Add(time.Duration(lifetimes) * life); clk.Now().Before(end); clk.Advance(step) {
		var wg sync.WaitGroup
		for range readers {
			wg.Go(func() {
				tok, err := br.GetToken(ctx, "c")
				if err != nil {
					panic(fmt.Sprintf("GetToken: %v", err))
				}
				mu.Lock()
				seen[tok.AccessToken] = true
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	// Tokens that reached their due time: all but the last one issued.
	return int(e.srv.RefreshCalls()), len(seen) - 1
}
