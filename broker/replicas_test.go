package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/pgtest"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store/postgres"
)

// Two replicas on one PostgreSQL database, each caching tokens: a refresh
// by one reaches the other's cache through the change feed.
func TestTokenCacheAcrossReplicas(t *testing.T) {
	e := newEnv(t, envOptions{})
	dsn := pgtest.FreshDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(owner string) *broker.Broker {
		st, err := postgres.Open(ctx, dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		b, err := broker.New(broker.Options{
			Store: st, Sealer: e.ring, Owner: owner,
			Providers:      map[string]broker.Provider{"acme": {Endpoint: e.ep, Policy: lifecycle.Policy{Window: time.Minute}}},
			TokenCacheSize: 16,
			Changes:        st,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := open("replica-a"), open("replica-b")
	follow := func(br *broker.Broker) chan struct{} {
		done := make(chan struct{})
		go func() { br.FollowChanges(ctx); close(done) }()
		return done
	}
	doneA, doneB := follow(a), follow(b)

	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	if _, err := a.CreateConnection(ctx, broker.Import{ID: "c1", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	// Warm b's cache (once its feed follows, reads are cached).
	for range 50 {
		tok, err := b.GetToken(ctx, "c1")
		if err != nil || tok.AccessToken != access {
			t.Fatalf("GetToken on b: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	fresh, err := a.RefreshConnection(ctx, "c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// b learns of a's write through the feed; poll until it does.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok, err := b.GetToken(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		if tok.AccessToken == fresh.AccessToken {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replica b kept serving the replaced token from its cache")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-doneA
	<-doneB
}
