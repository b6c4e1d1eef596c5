package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var connectTests = []struct {
	name string
	fn   testFunc
}{
	{"GrantRoundTrip", testGrantRoundTrip},
	{"SessionLifecycle", testConnectSessionLifecycle},
	{"SessionSingleUse", testConnectSessionSingleUse},
	{"SessionExpiry", testConnectSessionExpiry},
}

func stateHash(state string) []byte {
	h := sha256.Sum256([]byte(state))
	return h[:]
}

// testGrantRoundTrip: the grant survives create, compare-and-swap and
// update, and an update that does not mention it keeps it.
func testGrantRoundTrip(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	c := minimalConnection("cc-1")
	c.Grant = store.GrantClientCredentials
	got := mustCreate(t, s, c)
	if got.Grant != store.GrantClientCredentials {
		t.Fatalf("created Grant = %q, want %q", got.Grant, store.GrantClientCredentials)
	}
	if g := mustGet(t, s, "cc-1"); g.Grant != store.GrantClientCredentials {
		t.Errorf("read Grant = %q", g.Grant)
	}
	got.TokenType = "Bearer"
	cas, err := s.CompareAndSwap(ctx, got)
	if err != nil {
		t.Fatalf("CompareAndSwap: %v", err)
	}
	if cas.Grant != store.GrantClientCredentials {
		t.Errorf("after CompareAndSwap Grant = %q", cas.Grant)
	}
	upd, err := s.UpdateConnection(ctx, "cc-1", func(old store.Connection) (store.Connection, []store.Event, error) {
		old.Grant = ""
		return old, nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateConnection: %v", err)
	}
	if upd.Grant != "" || mustGet(t, s, "cc-1").Grant != "" {
		t.Errorf("Grant not cleared by update")
	}
	if plain := mustCreate(t, s, minimalConnection("plain")); plain.Grant != "" {
		t.Errorf("default Grant = %q, want empty", plain.Grant)
	}
	bad := minimalConnection("bad-grant")
	bad.Grant = "password"
	if _, err := s.CreateConnection(ctx, bad); err == nil {
		t.Errorf("CreateConnection with grant %q succeeded", bad.Grant)
	}
}

func testConnectSessionLifecycle(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	cs := s
	in := store.ConnectSession{
		ID: "sess-1", ConnectionID: "conn-1", Provider: "acme",
		RedirectURL: "https://app.example/done?x=1", Scopes: []string{"read", "write"},
		ExpiresAt: clk.Now().Add(10 * time.Minute),
	}
	if err := cs.CreateConnectSession(ctx, in); err != nil {
		t.Fatalf("CreateConnectSession: %v", err)
	}
	if err := cs.CreateConnectSession(ctx, in); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("second create: %v, want ErrAlreadyExists", err)
	}
	if _, err := cs.ConsumeConnectSession(ctx, stateHash("never-begun")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("consume before begin: %v, want ErrNotFound", err)
	}
	if _, err := cs.BeginConnectSession(ctx, "no-such", stateHash("s"), []byte("v")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("begin unknown session: %v, want ErrNotFound", err)
	}

	verifier1 := sealed("fake-verifier-1", 60)
	got, err := cs.BeginConnectSession(ctx, "sess-1", stateHash("state-1"), verifier1)
	if err != nil {
		t.Fatalf("BeginConnectSession: %v", err)
	}
	if got.ID != in.ID || got.ConnectionID != in.ConnectionID || got.Provider != in.Provider ||
		got.RedirectURL != in.RedirectURL || !slices.Equal(got.Scopes, in.Scopes) ||
		!sameTime(got.ExpiresAt, in.ExpiresAt) || !sameTime(got.CreatedAt, clk.Now()) ||
		!bytes.Equal(got.StateHash, stateHash("state-1")) || !bytes.Equal(got.Verifier, verifier1) {
		t.Errorf("begun session does not hold what was written")
	}

	// Opening the link again replaces the request: only the newest state
	// completes.
	verifier2 := sealed("fake-verifier-2", 60)
	if _, err := cs.BeginConnectSession(ctx, "sess-1", stateHash("state-2"), verifier2); err != nil {
		t.Fatalf("second BeginConnectSession: %v", err)
	}
	if _, err := cs.ConsumeConnectSession(ctx, stateHash("state-1")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("consume with the replaced state: %v, want ErrNotFound", err)
	}
	done, err := cs.ConsumeConnectSession(ctx, stateHash("state-2"))
	if err != nil {
		t.Fatalf("ConsumeConnectSession: %v", err)
	}
	if done.ID != "sess-1" || !bytes.Equal(done.Verifier, verifier2) {
		t.Errorf("consumed session is not the latest request of sess-1")
	}
	if _, err := cs.ConsumeConnectSession(ctx, stateHash("state-2")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("replayed consume: %v, want ErrNotFound", err)
	}
	if _, err := cs.BeginConnectSession(ctx, "sess-1", stateHash("state-3"), verifier2); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("begin after consume: %v, want ErrNotFound", err)
	}

	// No redirect and no scopes round-trip as empty.
	bare := store.ConnectSession{ID: "sess-2", ConnectionID: "c", Provider: "acme", ExpiresAt: clk.Now().Add(time.Minute)}
	if err := cs.CreateConnectSession(ctx, bare); err != nil {
		t.Fatalf("create bare session: %v", err)
	}
	b, err := cs.BeginConnectSession(ctx, "sess-2", stateHash("bare"), []byte("v"))
	if err != nil || b.RedirectURL != "" || len(b.Scopes) != 0 {
		t.Errorf("bare session: err %v, redirect %q, %d scopes", err, b.RedirectURL, len(b.Scopes))
	}

	for name, bad := range map[string]store.ConnectSession{
		"no id":        {ConnectionID: "c", Provider: "acme", ExpiresAt: clk.Now()},
		"no provider":  {ID: "x1", ConnectionID: "c", ExpiresAt: clk.Now()},
		"no expiry":    {ID: "x2", ConnectionID: "c", Provider: "acme"},
		"spaced scope": {ID: "x3", ConnectionID: "c", Provider: "acme", ExpiresAt: clk.Now(), Scopes: []string{"a b"}},
	} {
		if err := cs.CreateConnectSession(ctx, bad); err == nil {
			t.Errorf("create session with %s succeeded", name)
		}
	}
}

// testConnectSessionSingleUse: of many concurrent consumers of one state,
// exactly one gets the session.
func testConnectSessionSingleUse(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	cs := s
	if err := cs.CreateConnectSession(ctx, store.ConnectSession{ID: "race", ConnectionID: "c", Provider: "acme",
		ExpiresAt: clk.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.BeginConnectSession(ctx, "race", stateHash("race-state"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		won, lost, fail int
	)
	for range n {
		wg.Go(func() {
			_, err := cs.ConsumeConnectSession(ctx, stateHash("race-state"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, store.ErrNotFound):
				lost++
			default:
				fail++
				t.Errorf("consume: %v", err)
			}
		})
	}
	wg.Wait()
	if won != 1 || lost != n-1-fail {
		t.Errorf("%d consumers won, %d lost; want exactly one winner", won, lost)
	}
}

func testConnectSessionExpiry(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	cs := s
	for i, ttl := range []time.Duration{time.Minute, 10 * time.Minute} {
		if err := cs.CreateConnectSession(ctx, store.ConnectSession{ID: []string{"short", "long"}[i], ConnectionID: "c",
			Provider: "acme", ExpiresAt: clk.Now().Add(ttl)}); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(2 * time.Minute)
	n, err := cs.DeleteExpiredConnectSessions(ctx, clk.Now())
	if err != nil || n != 1 {
		t.Fatalf("DeleteExpiredConnectSessions = %d, %v; want 1", n, err)
	}
	if _, err := cs.BeginConnectSession(ctx, "short", stateHash("s"), []byte("v")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired session still there: %v", err)
	}
	if _, err := cs.BeginConnectSession(ctx, "long", stateHash("l"), []byte("v")); err != nil {
		t.Errorf("live session deleted: %v", err)
	}
}
