package broker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

// countingStore counts connection reads.
type countingStore struct {
	store.Backend
	gets atomic.Int64
}

func (c *countingStore) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	c.gets.Add(1)
	return c.Backend.GetConnection(ctx, id)
}

func TestTokenCacheSparesTheStoreAndFollowsLocalWrites(t *testing.T) {
	e := newEnv(t, envOptions{})
	counting := &countingStore{Backend: e.store}
	b, err := broker.New(broker.Options{
		Store: counting, Sealer: e.ring, Owner: "cached",
		Providers:      map[string]broker.Provider{"acme": {Endpoint: e.ep, Policy: lifecycle.Policy{Window: time.Minute}}},
		TokenCacheSize: 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	if _, err := b.CreateConnection(ctx, broker.Import{ID: "c1", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		tok, err := b.GetToken(ctx, "c1")
		if err != nil || tok.AccessToken != access {
			t.Fatalf("GetToken: %v", err)
		}
	}
	if n := counting.gets.Load(); n != 1 {
		t.Fatalf("100 GetTokens read the store %d times, want 1", n)
	}
	// A refresh through this broker replaces the cached token at once.
	fresh, err := b.RefreshConnection(ctx, "c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.GetToken(ctx, "c1")
	if err != nil || got.AccessToken != fresh.AccessToken {
		t.Fatal("GetToken served the replaced token from the cache")
	}
	// A delete is not answered from the cache.
	if _, err := b.DeleteConnection(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetToken(ctx, "c1"); err == nil {
		t.Fatal("GetToken served a deleted connection from the cache")
	}
}

func TestTokenCacheOffWithoutFollowedFeed(t *testing.T) {
	e := newEnv(t, envOptions{})
	counting := &countingStore{Backend: e.store}
	b, err := broker.New(broker.Options{
		Store: counting, Sealer: e.ring, Owner: "cached",
		Providers:      map[string]broker.Provider{"acme": {Endpoint: e.ep, Policy: lifecycle.Policy{Window: time.Minute}}},
		TokenCacheSize: 16,
		Changes:        neverFollows{},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	access, _, _ := e.srv.IssueTokens(t, "offline")
	if _, err := b.CreateConnection(ctx, broker.Import{ID: "c1", Provider: "acme", AccessToken: access, ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := b.GetToken(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := counting.gets.Load(); n != 10 {
		t.Fatalf("with a shared store and no change feed the cache served %d of 10 reads", 10-n)
	}
	// Once the feed follows, the cache is on; a lost feed turns it off.
	b.ChangesFollowed()
	b.GetToken(ctx, "c1")
	b.GetToken(ctx, "c1")
	if n := counting.gets.Load(); n != 11 {
		t.Fatalf("after ChangesFollowed: %d reads, want 11", n)
	}
	b.ConnectionChanged("c1")
	b.GetToken(ctx, "c1")
	if n := counting.gets.Load(); n != 12 {
		t.Fatal("a change notice did not drop the cached token")
	}
	b.ChangesLost()
	b.GetToken(ctx, "c1")
	b.GetToken(ctx, "c1")
	if n := counting.gets.Load(); n != 14 {
		t.Fatal("the cache kept serving after the feed was lost")
	}
}

type neverFollows struct{}

func (neverFollows) FollowChanges(ctx context.Context, _ store.ChangeHandler) { <-ctx.Done() }
