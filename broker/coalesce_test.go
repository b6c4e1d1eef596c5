package broker_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store"
)

// gatedReads holds the first GetConnection of a connection until released
// (gate), says when that read has reached the gate (held), and counts them
// all.
type gatedReads struct {
	store.Backend
	id    string
	gate  chan struct{}
	held  chan struct{}
	first atomic.Bool
	reads atomic.Int32
}

func newGatedReads(id string) *gatedReads {
	return &gatedReads{id: id, gate: make(chan struct{}), held: make(chan struct{})}
}

func (g *gatedReads) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	if id == g.id {
		g.reads.Add(1)
		if g.first.CompareAndSwap(false, true) {
			close(g.held)
			<-g.gate
		}
	}
	return g.Backend.GetConnection(ctx, id)
}

// waitHeld waits until the first read of g.id is held at the gate: being
// inside readConnection is not enough, since the read may not have begun.
func (g *gatedReads) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-g.held:
	case <-time.After(10 * time.Second):
		t.Fatal("no read of the connection reached the store")
	}
}

func (e *env) importValid(id string) string {
	e.t.Helper()
	access, refresh, _ := e.srv.IssueTokens(e.t, "offline")
	if _, err := e.broker.CreateConnection(context.Background(), broker.Import{
		ID: id, Provider: "acme", AccessToken: access, RefreshToken: refresh,
		ExpiresAt: time.Now().Add(time.Hour),
	}); err != nil {
		e.t.Fatal(err)
	}
	return access
}

// waitCallers waits until n goroutines are blocked waiting for the
// broker's shared read of a connection (the select in readConnection).
// Being inside readConnection is not enough: a caller that has not joined
// the read yet may join after it finished, and read again.
func waitCallers(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 4<<20)
	for {
		got := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.HasPrefix(g, "goroutine ") && strings.Contains(g, " [select") &&
				strings.Contains(g, "broker.(*Broker).readConnection(") {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d callers are waiting for the shared read", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestConcurrentMissesShareOneRead: callers that miss the token cache at
// once read the connection once between them, so a storm on one
// connection does not queue a read per caller on the database pool.
func TestConcurrentMissesShareOneRead(t *testing.T) {
	g := newGatedReads("c1")
	e := newEnv(t, envOptions{store: func(s store.Backend) store.Backend { g.Backend = s; return g }})
	access := e.importValid("c1")

	const callers = 50
	var wg sync.WaitGroup
	got := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			tok, err := e.broker.GetToken(context.Background(), "c1")
			got[i], errs[i] = tok.AccessToken, err
		})
	}
	g.waitHeld(t)
	waitCallers(t, callers)
	if n := g.reads.Load(); n != 1 {
		t.Fatalf("%d callers waiting made %d store reads, want 1", callers, n)
	}
	close(g.gate)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || got[i] != access {
			t.Fatalf("caller %d: err %v, got the imported token %v", i, errs[i], got[i] == access)
		}
	}
	if n := g.reads.Load(); n != 1 {
		t.Errorf("store reads = %d after the callers finished, want 1", n)
	}
}

// TestSharedReadNeverOlderThanAnnouncedWrite: a caller that arrives after
// a write was announced (here another replica's refresh, heard through the
// change feed) does not join a read that began before it; it reads the new
// row itself.
func TestSharedReadNeverOlderThanAnnouncedWrite(t *testing.T) {
	g := newGatedReads("c1")
	e := newEnv(t, envOptions{store: func(s store.Backend) store.Backend { g.Backend = s; return g }})
	old := e.importValid("c1")

	early := make(chan error, 1)
	go func() {
		_, err := e.broker.GetToken(context.Background(), "c1")
		early <- err
	}()
	g.waitHeld(t) // its read is held at the gate

	replicaB := e.newBroker(e.store, "replica-b", nil)
	fresh, err := replicaB.RefreshConnection(context.Background(), "c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.AccessToken == old {
		t.Fatal("replica b's refresh returned the old token")
	}
	e.broker.ConnectionChanged("c1") // what the change feed delivers

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	late, err := e.broker.GetToken(ctx, "c1")
	if err != nil {
		t.Fatalf("a caller after the write: %v (did it join the read begun before the write?)", err)
	}
	if late.AccessToken != fresh.AccessToken {
		t.Fatal("a caller that arrived after the write was announced got the token it replaced")
	}
	close(g.gate)
	if err := <-early; err != nil {
		t.Fatalf("the caller before the write: %v", err)
	}
}
