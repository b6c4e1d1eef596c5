package broker_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

// stored opens the connection's stored tokens.
func (e *env) stored(id string) (access, refresh string, c store.Connection) {
	e.t.Helper()
	c, err := e.store.GetConnection(context.Background(), id)
	if err != nil {
		e.t.Fatalf("GetConnection(%q): %v", id, err)
	}
	open := func(field string, v []byte) string {
		if len(v) == 0 {
			return ""
		}
		p, err := e.ring.Open(v, []byte("conn:"+id+":"+field))
		if err != nil {
			e.t.Fatalf("open %s: %v", field, err)
		}
		return string(p)
	}
	return open("access", c.AccessToken), open("refresh", c.RefreshToken), c
}

// TestDeleteDuringRefreshNeverResurrectsTheGrant is the reported attack:
// import A, start a forced refresh while the provider takes 800 ms, delete
// A, import grant B under the same id, read the token. The reader gets B's
// token, B's refresh token is intact in storage, and A's grant, including
// the tokens its in-flight refresh obtained, is revoked at the provider.
func TestDeleteDuringRefreshNeverResurrectsTheGrant(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	accessA, refreshA, _ := e.srv.IssueTokens(t, "offline")
	if _, err := e.broker.CreateConnection(ctx, broker.Import{ID: "c", Provider: "acme", AccessToken: accessA, RefreshToken: refreshA, ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{}, 1)
	e.srv.OnHold(func() { held <- struct{}{} })
	e.srv.SetTokenDelay(800 * time.Millisecond)
	var (
		refreshed broker.Token
		rerr      error
		wg        sync.WaitGroup
	)
	wg.Go(func() { refreshed, rerr = e.broker.RefreshConnection(ctx, "c", nil) })
	<-held // the provider has rotated A's refresh token; its answer is on the way
	e.srv.OnHold(nil)
	if _, err := e.broker.DeleteConnection(ctx, "c"); err != nil {
		t.Fatalf("DeleteConnection: %v", err)
	}
	wg.Wait()
	e.srv.SetTokenDelay(0)
	if rerr != nil {
		t.Fatalf("the refresh in flight failed: %v", rerr)
	}
	// The delete waited for the refresh and revoked what it obtained.
	if e.srv.Active(t, refreshed.AccessToken) {
		t.Error("the deleted connection's refreshed grant is still active at the provider")
	}

	accessB, refreshB, _ := e.srv.IssueTokens(t, "offline")
	if _, err := e.broker.CreateConnection(ctx, broker.Import{ID: "c", Provider: "acme", AccessToken: accessB, RefreshToken: refreshB, ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	tok, err := e.broker.GetToken(ctx, "c")
	if err != nil || tok.AccessToken != accessB {
		t.Fatalf("GetToken after re-create: err %v, B's token %v; a deleted connection's token was served", err, tok.AccessToken == accessB)
	}
	if _, gotRefresh, _ := e.stored("c"); gotRefresh != refreshB {
		t.Fatal("B's refresh token was overwritten in storage")
	}
	if _, err := e.broker.RefreshConnection(ctx, "c", nil); err != nil || e.srv.ReuseDetected() != 0 {
		t.Fatalf("refreshing B: %v, %d reuses", err, e.srv.ReuseDetected())
	}
}

// TestUnsavedTokenStaysWithItsIncarnation: a replica holds a token it
// could not save; another replica deletes the connection and creates a new
// one under the same id. The first replica never saves or serves the old
// grant's token for the new connection.
func TestUnsavedTokenStaysWithItsIncarnation(t *testing.T) {
	var flaky *flakyStore
	e := newEnv(t, envOptions{store: func(s store.Backend) store.Backend {
		flaky = &flakyStore{Backend: s}
		return flaky
	}})
	ctx := context.Background()
	e.importExpired("c")
	flaky.down.Store(true)
	tokA, err := e.broker.GetToken(ctx, "c")
	if err != nil {
		t.Fatalf("GetToken with saves failing: %v", err)
	}
	flaky.down.Store(false)

	other := e.newBroker(e.store, "replica-b", nil)
	if _, err := other.DeleteConnection(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	accessB, refreshB, _ := e.srv.IssueTokens(t, "offline")
	if _, err := other.CreateConnection(ctx, broker.Import{ID: "c", Provider: "acme", AccessToken: accessB, RefreshToken: refreshB, ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	tok, err := e.broker.RefreshConnection(ctx, "c", nil)
	if err != nil {
		t.Fatalf("forced refresh of the new connection on the first replica: %v", err)
	}
	if tok.AccessToken == tokA.AccessToken {
		t.Fatal("the old incarnation's unsaved token was served for the new connection")
	}
	gotAccess, gotRefresh, _ := e.stored("c")
	if gotAccess != tok.AccessToken || gotRefresh == "" || gotRefresh == refreshB {
		t.Fatal("the new connection's refresh was not saved as its own")
	}
	if e.srv.ReuseDetected() != 0 {
		t.Fatalf("%d refresh token reuses", e.srv.ReuseDetected())
	}
}

// renewFailingStore refuses lease renewals of one owner prefix: the lease
// the flight holds becomes uncertain.
type renewFailingStore struct {
	store.Backend
	prefix string
	seen   sync.Map // owner -> bool: the first acquisition succeeds
}

func (s *renewFailingStore) AcquireLease(ctx context.Context, id, owner string, ttl time.Duration) (store.Connection, error) {
	if strings.HasPrefix(owner, s.prefix) {
		if _, renewal := s.seen.LoadOrStore(owner, true); renewal {
			return store.Connection{}, store.ErrUnavailable
		}
	}
	return s.Backend.AcquireLease(ctx, id, owner, ttl)
}

// TestLeaseFencesTheProviderCall: with lease renewals failing and a provider
// that takes longer than the lease, the provider call is cut off before the
// lease could lapse; a second replica waiting for the lease never sends the
// same refresh token, and, the provider rotating strictly, the connection
// ends refresh_outcome_unknown: never silently broken.
func TestLeaseFencesTheProviderCall(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	e.importExpired("c")
	a := e.newBroker(&renewFailingStore{Backend: e.store, prefix: "replica-a/"}, "replica-a", nil)
	b := e.newBroker(e.store, "replica-b", nil)
	held := make(chan struct{}, 1)
	e.srv.OnHold(func() { held <- struct{}{} })
	e.srv.SetTokenDelay(5 * time.Second)
	var aerr error
	var wg sync.WaitGroup
	wg.Go(func() { _, aerr = a.GetToken(ctx, "c") })
	<-held
	_, berr := b.GetToken(ctx, "c")
	wg.Wait()
	if n := e.srv.RefreshCalls(); n != 1 {
		t.Fatalf("the provider saw %d refreshes, want 1: the lease let a second replica send the refresh token", n)
	}
	if e.srv.ReuseDetected() != 0 {
		t.Fatal("refresh token reuse detected")
	}
	if !errors.Is(aerr, oauth.ErrReauthRequired) || !errors.Is(berr, oauth.ErrReauthRequired) {
		t.Fatalf("errors %v / %v, want reauth required for both", aerr, berr)
	}
	_, _, c := e.stored("c")
	if c.Status != store.StatusNeedsReauth || c.Failure == nil || c.Failure.Code != oauth.CodeOutcomeUnknown {
		t.Fatalf("connection %s with failure %+v, want needs_reauth refresh_outcome_unknown", c.Status, c.Failure)
	}
	// A person who knows the provider kept the old token (it did not: this
	// one rotated it) may refresh by hand; here that earns invalid_grant.
	e.srv.SetTokenDelay(0)
	if _, err := a.RefreshConnection(ctx, "c", nil); !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("forced refresh after an unknown outcome: %v", err)
	}
	if n := e.srv.RefreshCalls(); n != 2 {
		t.Fatalf("a person's forced refresh was not sent (%d calls)", n)
	}
}

func TestLeaseTimingValidated(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, o := range []broker.Options{
		{LeaseTTL: 2 * time.Nanosecond},
		{LeaseTTL: 30 * time.Second, RefreshTimeout: 30 * time.Second},
		{LeaseTTL: 30 * time.Second, RefreshTimeout: 26 * time.Second},
	} {
		o.Store, o.Sealer = e.store, e.ring
		if _, err := broker.New(o); err == nil || !strings.Contains(err.Error(), "lease TTL") {
			t.Errorf("lease %v, timeout %v: err %v, want the lease timing refused", o.LeaseTTL, o.RefreshTimeout, err)
		}
	}
}

// TestOutcomeUnknownByRotation: a refresh whose answer a gateway lost (504)
// at a strictly rotating provider makes the connection need a person; at a
// provider with a grace window it is retried within the grace.
func TestOutcomeUnknownByRotation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy lifecycle.Policy
		dead   bool
	}{
		{"rotate", lifecycle.Policy{Rotation: lifecycle.RotationRotate}, true},
		{"rotate_grace", lifecycle.Policy{Rotation: lifecycle.RotationRotateGrace, RotationGrace: 10 * time.Minute}, false},
		{"none", lifecycle.Policy{Rotation: lifecycle.RotationNone}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{provider: func(p *broker.Provider) { p.Policy = tc.policy }})
			ctx := context.Background()
			e.importExpired("c")
			e.srv.FailNext(1, http.StatusGatewayTimeout, http.Header{"Content-Type": {"text/html"}}, "<html>upstream timed out</html>")
			_, err := e.broker.GetToken(ctx, "c")
			if oauth.Terminal(err) != tc.dead {
				t.Fatalf("GetToken: %v; want terminal %v", err, tc.dead)
			}
			_, _, c := e.stored("c")
			if tc.dead {
				if c.Failure == nil || c.Failure.Code != oauth.CodeOutcomeUnknown || c.Status != store.StatusNeedsReauth {
					t.Fatalf("failure %+v status %s", c.Failure, c.Status)
				}
				if e.events.count(broker.EventReauthRequired) != 1 {
					t.Error("no reauth_required event")
				}
				// The gateway never reached the provider here, so a person's
				// "refresh now" recovers the connection.
				if _, err := e.broker.RefreshConnection(ctx, "c", nil); err != nil {
					t.Fatalf("forced refresh: %v", err)
				}
				return
			}
			if c.Failure == nil || c.Status != store.StatusActive {
				t.Fatalf("failure %+v status %s, want active, cooling down", c.Failure, c.Status)
			}
			if tc.policy.Rotation == lifecycle.RotationRotateGrace && c.Failure.NextAttemptAt.After(time.Now().Add(tc.policy.RotationGrace)) {
				t.Fatalf("next attempt %v from now, want inside the grace", time.Until(c.Failure.NextAttemptAt))
			}
		})
	}
}

// TestProviderTextIsScrubbed: a provider that echoes the refresh token in
// its error description does not get it stored in the failure admins see.
func TestProviderTextIsScrubbed(t *testing.T) {
	e := newEnv(t, envOptions{})
	_, refresh := e.importExpired("c")
	e.srv.FailNext(1, http.StatusBadRequest, http.Header{"Content-Type": {"application/json"}},
		`{"error":"invalid_grant","error_description":"refresh token `+refresh+` was revoked"}`)
	if _, err := e.broker.GetToken(context.Background(), "c"); !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("GetToken: %v", err)
	}
	_, _, c := e.stored("c")
	if c.Failure == nil || strings.Contains(c.Failure.Message, refresh) || !strings.Contains(c.Failure.Message, "was revoked") {
		t.Fatalf("stored failure message %q: the token must be scrubbed, the rest kept", c.Failure.Message)
	}
}

// TestRateLimitCoversEveryPath: the provider's token-endpoint rate limit
// applies to forced refreshes, not only to the scheduler.
func TestRateLimitCoversEveryPath(t *testing.T) {
	e := newEnv(t, envOptions{provider: func(p *broker.Provider) { p.TokenRate = 0.01 }})
	ctx := context.Background()
	e.importExpired("c")
	if _, err := e.broker.RefreshConnection(ctx, "c", nil); err != nil {
		t.Fatal(err)
	}
	_, err := e.broker.RefreshConnection(ctx, "c", nil)
	if !errors.Is(err, oauth.ErrTransient) || oauth.RetryAfter(err) <= 0 {
		t.Fatalf("second forced refresh inside the rate limit: %v, want transient with Retry-After", err)
	}
	if n := e.srv.RefreshCalls(); n != 1 {
		t.Fatalf("%d refreshes reached the provider, want 1", n)
	}
	if _, _, c := e.stored("c"); c.Failure != nil {
		t.Fatalf("a local rate limit was recorded as the connection's failure: %+v", c.Failure)
	}
}

// TestOnErrorBudget: an API that answers 401 whatever the token costs one
// refresh per on-error interval, not one per call.
func TestOnErrorBudget(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	access, _, _ := e.srv.IssueTokens(t, "offline")
	_, refresh, _ := e.srv.IssueTokens(t, "offline")
	if _, err := e.broker.CreateConnection(ctx, broker.Import{ID: "c", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 20 {
				tok, err := e.broker.GetToken(ctx, "c")
				if err != nil {
					t.Error(err)
					return
				}
				// The API rejects every token; the caller reports it.
				if _, err := e.broker.RefreshConnection(ctx, "c", &tok.AccessToken); err != nil {
					t.Error(err)
					return
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	if n := e.srv.RefreshCalls(); n != 1 {
		t.Fatalf("%d refreshes for %d rejections inside the on-error interval, want 1", n, calls.Load())
	}
}
