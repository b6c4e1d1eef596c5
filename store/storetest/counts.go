package storetest

import (
	"maps"
	"testing"

	"github.com/tokenbroker/tokenbroker/store"
)

var countTests = []struct {
	name string
	fn   testFunc
}{
	{"ByProviderAndStatus", testCountConnections},
}

func group(provider, status string) store.ConnectionGroup {
	return store.ConnectionGroup{Provider: provider, Status: status}
}

// testCountConnections: counts are grouped by provider and status, an
// active connection with a failure counts as failing and not as active, and
// the counts follow updates and deletes.
func testCountConnections(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	cc := s
	got, err := cc.CountConnections(ctx)
	if err != nil {
		t.Fatalf("CountConnections on an empty store: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("empty store: counts %v, want none", got)
	}

	failure := &store.Failure{Code: "http_503", Attempts: 1, FirstAt: clk.Now()}
	add := func(id, provider string, status store.Status, f *store.Failure) {
		c := minimalConnection(id)
		c.Provider, c.Status, c.Failure = provider, status, f
		mustCreate(t, s, c)
	}
	add("a-1", "acme", store.StatusActive, nil)
	add("a-2", "acme", store.StatusActive, nil)
	add("a-3", "acme", store.StatusActive, failure)
	add("a-4", "acme", store.StatusNeedsReauth, &store.Failure{Code: "invalid_grant", Attempts: 1, FirstAt: clk.Now()})
	add("a-5", "acme", store.StatusRevoked, nil)
	add("b-1", "beta", store.StatusActive, nil)
	add("b-2", "beta", store.StatusNeedsReauth, nil)

	check := func(when string, want map[store.ConnectionGroup]int) {
		t.Helper()
		got, err := cc.CountConnections(ctx)
		if err != nil {
			t.Fatalf("%s: CountConnections: %v", when, err)
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s: counts %v, want %v", when, got, want)
		}
	}
	check("after creating", map[store.ConnectionGroup]int{
		group("acme", "active"):             2,
		group("acme", store.CountedFailing): 1,
		group("acme", "needs_reauth"):       1,
		group("acme", "revoked"):            1,
		group("beta", "active"):             1,
		group("beta", "needs_reauth"):       1,
	})

	// The failing one recovers; one healthy one is deleted.
	if _, err := s.UpdateConnection(ctx, "a-3", func(old store.Connection) (store.Connection, []store.Event, error) {
		old.Failure = nil
		return old, nil, nil
	}); err != nil {
		t.Fatalf("UpdateConnection: %v", err)
	}
	if err := s.DeleteConnection(ctx, "b-1"); err != nil {
		t.Fatalf("DeleteConnection: %v", err)
	}
	check("after a recovery and a delete", map[store.ConnectionGroup]int{
		group("acme", "active"):       3,
		group("acme", "needs_reauth"): 1,
		group("acme", "revoked"):      1,
		group("beta", "needs_reauth"): 1,
	})
}
